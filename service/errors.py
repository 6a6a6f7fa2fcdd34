"""The second tier of errors: anything a route did not turn into an HTTPException."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.batching import BatcherClosed

log = logging.getLogger("service.errors")


async def timeout_handler(request: Request, exc: TimeoutError) -> JSONResponse:
    log.warning("%s %s timed out", request.method, request.url.path)
    return JSONResponse(
        {"detail": "the request took too long; retry later"}, status_code=503, headers={"Retry-After": "5"}
    )


async def unloaded_handler(request: Request, exc: BatcherClosed) -> JSONResponse:
    return JSONResponse(
        {"detail": "the model was unloaded while serving; retry"}, status_code=503, headers={"Retry-After": "1"}
    )


async def unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TimeoutError, timeout_handler)
    app.add_exception_handler(BatcherClosed, unloaded_handler)
    app.add_exception_handler(Exception, unhandled_handler)
