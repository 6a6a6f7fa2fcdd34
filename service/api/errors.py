"""The one mapping from errors to HTTP answers. Every error is JSON ``{"detail": ...}``, written by ``ErrorResponse``
so that no input, whatever its bytes or characters, can turn an error answer into a 500."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.uploads import upload_problem
from service.errors import (
    InputTooLarge,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    ModelUnloaded,
    ServiceError,
    StorageFull,
    UnsupportedFormat,
    WrongModelKind,
)
from service.jobs.errors import JobNotFound, JobStopping, QueueFull, QueueUnavailable

log = logging.getLogger("service.api")

# Most specific first: a subclass is listed before its base.
STATUS: list[tuple[type[ServiceError], int, dict[str, str]]] = [
    (InvalidInput, 422, {}),
    (UnsupportedFormat, 415, {}),
    (InputTooLarge, 413, {}),
    (WrongModelKind, 422, {}),
    (ModelNotFound, 404, {}),
    (JobNotFound, 404, {}),
    (JobStopping, 409, {"Retry-After": "1"}),
    (QueueUnavailable, 503, {"Retry-After": "5"}),
    (QueueFull, 503, {"Retry-After": "60"}),
    (StorageFull, 507, {"Retry-After": "60"}),
    (ModelUnloaded, 503, {"Retry-After": "1"}),
    (ModelUnavailable, 503, {"Retry-After": "30"}),
]
PARSE_FAILED = "There was an error parsing the body"  # FastAPI's words for a body it could not read


def status_of(exc: ServiceError) -> tuple[int, dict[str, str]]:
    return next(((code, headers) for kind, code, headers in STATUS if isinstance(exc, kind)), (500, {}))


def printable(value: Any) -> Any:
    """``value`` with every string made encodable: a lone surrogate (valid in a JSON string, not in UTF-8) is
    written out as its escape (``\\ud800``), so echoing a field name back cannot fail."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(str(k)): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return printable(str(value))


class ErrorResponse(JSONResponse):
    """A JSON error answer that renders whatever its content holds (see ``printable``)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(printable(content), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Each validation error's type, place and message. The input is left out: it may be the whole body, binary,
    or text no encoder takes, and the client has it already."""
    found = []
    for error in exc.errors():
        msg, ctx = error.get("msg", "invalid value"), error.get("ctx") or {}
        if error.get("type") == "json_invalid" and isinstance(ctx.get("error"), str):
            msg = f"{msg}: {ctx['error']}"
        found.append({"type": error.get("type", "invalid"), "loc": list(error.get("loc", ())), "msg": msg})
    return found


def validation_message(exc: RequestValidationError) -> str:
    """The validation errors as one sentence (the Open Inference Protocol's ``{"error": ...}`` is a string)."""
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in field_errors(exc)]
    return printable("; ".join(parts) or "invalid request")


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    status, headers = status_of(exc)
    return ErrorResponse({"detail": exc.detail}, status_code=status, headers=headers)


async def timeout_error(request: Request, exc: TimeoutError) -> JSONResponse:
    log.warning("%s %s timed out", request.method, request.url.path)
    return ErrorResponse(
        {"detail": "the request took too long; retry later"}, status_code=503, headers={"Retry-After": "5"}
    )


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with the field errors; a missing or unreadable upload (``file``) gets a sentence saying what to send
    (415 when the body is not a multipart form at all)."""
    if any(tuple(e.get("loc", ()))[:2] == ("body", "file") for e in exc.errors()):
        status, detail = upload_problem(request, "video" if request.url.path.endswith("/video") else "file")
        return ErrorResponse({"detail": detail}, status_code=status)
    return ErrorResponse({"detail": field_errors(exc)}, status_code=422)


def http_problem(exc: StarletteHTTPException) -> tuple[int, str]:
    """Starlette answers a body it cannot parse (malformed multipart, broken JSON) with 400; this service calls
    corrupt input 422 everywhere, as its OpenAPI document says, and names what could not be read."""
    detail = str(exc.detail)
    if exc.status_code == 400 and detail == PARSE_FAILED and exc.__cause__ is not None:
        detail = f"the request body could not be read: {exc.__cause__}"
    return (422 if exc.status_code == 400 else exc.status_code), detail


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status, detail = http_problem(exc)
    return ErrorResponse({"detail": detail}, status_code=status, headers=getattr(exc, "headers", None))


async def unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ErrorResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(TimeoutError, timeout_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unhandled_error)
