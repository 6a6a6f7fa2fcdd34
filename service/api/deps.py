"""Request dependencies as ``Annotated`` aliases.

All are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per dependency
per request for what is an attribute lookup.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, File, Header, HTTPException, Query, Request, UploadFile

from model_store import is_valid_name
from service.config import Settings
from service.detection import FaceDetector
from service.metrics import Metrics
from service.registry import LoadedModel, ModelNotFound, ModelRegistry, ModelUnavailable


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def _detector(request: Request) -> FaceDetector:
    return request.app.state.detector


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
DetectorDep = Annotated[FaceDetector, Depends(_detector)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]


async def check_api_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """401 unless the ``X-API-Key`` header matches ``EMOTION_API_KEY`` (when that is set)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected):
        raise HTTPException(
            401, "missing or invalid API key (header X-API-Key)", headers={"WWW-Authenticate": "X-API-Key"}
        )


ApiKeyDep = Depends(check_api_key)


def valid_model_name(name: str | None) -> str | None:
    if name is not None and not is_valid_name(name):
        raise HTTPException(404, f"unknown model {name[:64]!r}")
    return name


async def _model(
    registry: RegistryDep,
    model: Annotated[
        str | None, Query(max_length=64, description="model name; default: the service's default model")
    ] = None,
    version: Annotated[str | None, Query(max_length=64, description="model version; default: the newest")] = None,
) -> LoadedModel:
    try:
        return await registry.get(valid_model_name(model), valid_model_name(version))
    except ModelNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except ModelUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from exc


ModelDep = Annotated[LoadedModel, Depends(_model)]


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """The whole upload, or 413 past ``limit`` bytes."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload is larger than the {limit} byte limit")
    return data


RAW_BODY_TYPES = ("image/", "application/octet-stream")


async def _image_bytes(
    request: Request,
    settings: SettingsDep,
    file: Annotated[
        UploadFile | None,
        File(
            description="the image as multipart field `file`; or send the bytes as the raw request body with "
            "`Content-Type: image/jpeg` (any `image/*`) or `application/octet-stream`"
        ),
    ] = None,
) -> bytes:
    """The uploaded image: multipart field ``file``, or the raw body (no multipart parsing, for per-frame callers)."""
    limit = settings.max_upload_bytes
    if file is not None:
        return await read_upload(file, limit)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise HTTPException(422, "the form has no field 'file'; send the image as multipart field 'file'")
    if not content_type.startswith(RAW_BODY_TYPES):
        raise HTTPException(
            415,
            "send the image as multipart field 'file' or as the raw body with Content-Type image/* or "
            "application/octet-stream",
        )
    data = await request.body()  # BodyLimitMiddleware has already refused bodies over the limit while streaming
    if len(data) > limit:
        raise HTTPException(413, f"upload is larger than the {limit} byte limit")
    return data


ImageBytesDep = Annotated[bytes, Depends(_image_bytes)]
