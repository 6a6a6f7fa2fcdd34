"""The API documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their scripts and styles served
from files installed with the package (fastapi-offline ships them) instead of FastAPI's default CDN: the pages
work on a machine with no network, like the rest of the service. ``/asyncapi.json`` describes ``WS /stream``, which
OpenAPI cannot: an AsyncAPI 2.6 document whose payloads are the JSON schemas of ``emotion_client.stream_messages``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from emotion_client import stream_messages as sm

ASSET_PATH = "/docs/assets"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# validatorUrl None: Swagger UI would otherwise ask an online validator about the document.
SWAGGER_PARAMETERS = {"validatorUrl": None}
# The pages may load and call only this service (ReDoc's menu shows a logo from its vendor's CDN: refused here, it
# hides itself). Inline script and styles: FastAPI's page starts Swagger UI inline; ReDoc styles inline.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers.update(PAGE_HEADERS)
    return response


def asset_folder() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


# Only the shipped files, looked up by name: no path can leave the folder.
ASSETS = {p.name: p for p in asset_folder().iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}

router = APIRouter(include_in_schema=False)


def _title(request: Request) -> str:
    return request.app.title


def _openapi(request: Request) -> str:
    return request.scope.get("root_path", "") + (request.app.openapi_url or "/openapi.json")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this service's OpenAPI document."""
    root = request.scope.get("root_path", "")
    html = get_swagger_ui_html(
        openapi_url=_openapi(request),
        title=f"{_title(request)} - Swagger UI",
        swagger_js_url=f"{root}{ASSET_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSET_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSET_PATH}/favicon.png",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )
    return _page(html)


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return _page(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the same document (no web fonts: the page's own fonts only)."""
    root = request.scope.get("root_path", "")
    html = get_redoc_html(
        openapi_url=_openapi(request),
        title=f"{_title(request)} - ReDoc",
        redoc_js_url=f"{root}{ASSET_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSET_PATH}/favicon.png",
        with_google_fonts=False,
    )
    return _page(html)


@router.get(ASSET_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise HTTPException(404, f"no documentation asset {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=86400"})


# AsyncAPI 2.x: "publish" is what clients send to the channel (the service receives), "subscribe" what they get.
CLIENT_MESSAGES: tuple[type[BaseModel], ...] = (sm.StreamOptions, sm.StreamControl)
SERVER_MESSAGES: tuple[type[BaseModel], ...] = (sm.StreamReady, sm.StreamResult, sm.StreamSummary, sm.StreamError)
FRAME_MESSAGE = {
    "name": "Frame",
    "title": "A frame",
    "summary": "binary: JPEG, PNG or WebP bytes, optionally prefixed by b'EMT1' and a float64 little-endian capture "
    "time in seconds",
    "contentType": "application/octet-stream",
    "payload": {"type": "string", "format": "binary"},
}
CLOSE_CODES = {
    sm.CLOSE_NORMAL: "the client sent close (after the final summary)",
    sm.CLOSE_GOING_AWAY: "idle too long, or longer than the session limit (after a final summary)",
    sm.CLOSE_INVALID_OPTIONS: "the options message is not JSON, has an unknown field, a bad value or a non-face model",
    sm.CLOSE_POLICY: "the service requires an API key and the session gave none, or a wrong one",
    sm.CLOSE_TOO_BIG: "a frame message over the size limit",
    sm.CLOSE_INTERNAL: "a server fault",
    sm.CLOSE_SERVICE_RESTART: "the server is stopping: reconnect",
    sm.CLOSE_TRY_AGAIN: "every session place is taken: try again later",
}


def one_of(names: list[str]) -> dict:
    return {"oneOf": [{"$ref": f"#/components/messages/{name}"} for name in names]}


def asyncapi_document(version: str) -> dict:
    """The AsyncAPI 2.6 description of ``WS /stream``: its channel, the messages each side sends, their schemas."""
    pairs = [(m, "validation") for m in CLIENT_MESSAGES] + [(m, "serialization") for m in SERVER_MESSAGES]
    _, definitions = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    messages = {
        m.__name__: {
            "name": m.__name__,
            "title": m.__name__,
            "summary": (m.__doc__ or m.__name__).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{m.__name__}"},
        }
        for m in (*CLIENT_MESSAGES, *SERVER_MESSAGES)
    }
    messages["Frame"] = FRAME_MESSAGE
    codes = "; ".join(f"{code}: {why}" for code, why in CLOSE_CODES.items())
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Facial emotion service: live streams",
            "version": version,
            "description": "One WebSocket per live session: options, then frames; one result per analysed frame "
            f"(the newest frame wins). Close codes: {codes}.",
        },
        "defaultContentType": "application/json",
        "channels": {
            sm.STREAM_PATH: {
                "description": f"Subprotocol {sm.SUBPROTOCOL!r}; the API key as header X-API-Key, a subprotocol "
                f"'{sm.KEY_PROTOCOL_PREFIX}<key>' or api_key in the options, never in the URL.",
                "bindings": {"ws": {"bindingVersion": "0.1.0", "method": "GET"}},
                "publish": {
                    "operationId": "sendToService",
                    "message": one_of(["StreamOptions", "Frame", "StreamControl"]),
                },
                "subscribe": {
                    "operationId": "receiveFromService",
                    "message": one_of([m.__name__ for m in SERVER_MESSAGES]),
                },
            }
        },
        "components": {"messages": messages, "schemas": definitions["$defs"]},
    }


@router.get("/asyncapi.json")
async def asyncapi(request: Request) -> dict:
    """The AsyncAPI document of ``WS /stream`` (OpenAPI describes no WebSocket routes)."""
    return asyncapi_document(request.app.version)
