"""The API documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their scripts and styles served
from files installed with the package (fastapi-offline ships them) instead of FastAPI's default CDN: the pages
work on a machine with no network, like the rest of the service."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

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
