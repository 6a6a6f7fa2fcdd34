"""The one mapping from domain errors to HTTP answers. Every error is JSON ``{"detail": ...}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    InputTooLarge,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    ModelUnloaded,
    ServiceError,
    UnsupportedFormat,
    WrongModelKind,
)
from service.jobs.errors import JobFinished, JobNotFound, QueueUnavailable

log = logging.getLogger("service.api")

# Most specific first: a subclass is listed before its base.
STATUS: list[tuple[type[ServiceError], int, dict[str, str]]] = [
    (InvalidInput, 422, {}),
    (UnsupportedFormat, 415, {}),
    (InputTooLarge, 413, {}),
    (WrongModelKind, 422, {}),
    (ModelNotFound, 404, {}),
    (JobNotFound, 404, {}),
    (JobFinished, 409, {}),
    (QueueUnavailable, 503, {"Retry-After": "5"}),
    (ModelUnloaded, 503, {"Retry-After": "1"}),
    (ModelUnavailable, 503, {"Retry-After": "30"}),
]


def status_of(exc: ServiceError) -> tuple[int, dict[str, str]]:
    return next(((code, headers) for kind, code, headers in STATUS if isinstance(exc, kind)), (500, {}))


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    status, headers = status_of(exc)
    return JSONResponse({"detail": exc.detail}, status_code=status, headers=headers)


async def timeout_error(request: Request, exc: TimeoutError) -> JSONResponse:
    log.warning("%s %s timed out", request.method, request.url.path)
    return JSONResponse(
        {"detail": "the request took too long; retry later"}, status_code=503, headers={"Retry-After": "5"}
    )


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette answers a body it cannot parse (malformed multipart, broken JSON) with 400; this service calls
    corrupt input 422 everywhere, as its OpenAPI document says."""
    status = 422 if exc.status_code == 400 else exc.status_code
    return JSONResponse({"detail": exc.detail}, status_code=status, headers=getattr(exc, "headers", None))


async def unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(TimeoutError, timeout_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unhandled_error)
