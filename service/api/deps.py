"""Request dependencies as ``Annotated`` aliases.

All are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per dependency
per request for what is an attribute lookup.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import Depends, File, Header, HTTPException, Query, Request, UploadFile

from service.api.uploads import upload_problem
from service.config import Settings
from service.errors import InvalidInput
from service.jobs import JobService
from service.metrics import Metrics
from service.options import Requested
from service.pipelines import Pipelines
from service.registry import LoadedModel, ModelRegistry


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def _pipelines(request: Request) -> Pipelines:
    return request.app.state.pipelines


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def _jobs(request: Request) -> JobService:
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
PipelinesDep = Annotated[Pipelines, Depends(_pipelines)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
JobsDep = Annotated[JobService, Depends(_jobs)]


def key_matches(settings: Settings, given: str | None) -> bool:
    """Whether ``given`` is ``EMOTION_API_KEY`` (compared in constant time); any key, or none, when that is unset.
    The one comparison every route and ``WS /stream`` make."""
    if settings.api_key is None:
        return True
    expected = settings.api_key.get_secret_value().encode()
    return given is not None and secrets.compare_digest(given.encode(), expected)


async def check_api_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """401 unless the ``X-API-Key`` header matches ``EMOTION_API_KEY`` (when that is set)."""
    if not key_matches(settings, x_api_key):
        raise HTTPException(
            401, "missing or invalid API key (header X-API-Key)", headers={"WWW-Authenticate": "X-API-Key"}
        )


ApiKeyDep = Depends(check_api_key)


ModelName = Annotated[
    str | None, Query(max_length=64, description="model name; default (or empty): the service's default model")
]
ModelVersion = Annotated[str | None, Query(max_length=64, description="model version; default (or empty): the newest")]


async def _model(registry: RegistryDep, model: ModelName = None, version: ModelVersion = None) -> LoadedModel:
    """The requested model, loaded (ModelNotFound and ModelUnavailable become 404 and 503 in api/errors)."""
    return await registry.get(model, version)


ModelDep = Annotated[LoadedModel, Depends(_model)]

SuiteNames = Annotated[
    list[str] | None,
    Query(
        description="attribute model(s); repeat for a suite (model=a&model=b); name:version pins a version; "
        "default: the service's default model"
    ),
]


async def _suite(
    registry: RegistryDep, settings: SettingsDep, model: SuiteNames = None, version: ModelVersion = None
) -> list[LoadedModel]:
    """The named models, loaded, in order (duplicates once); ``version`` applies when one model is named."""
    refs = list(dict.fromkeys(m for m in model or [] if m)) or [""]
    if len(refs) > settings.limits.max_suite_models:
        raise InvalidInput(
            f"{len(refs)} models named; at most {settings.limits.max_suite_models} per request "
            "(EMOTION_LIMITS__MAX_SUITE_MODELS)"
        )
    if version and len(refs) > 1:
        raise InvalidInput("version applies to one model; pin versions in a suite as model=name:version")
    pairs = [ref.partition(":")[::2] for ref in refs]
    if any(len(name) > 64 or len(pinned) > 64 for name, pinned in pairs):
        raise InvalidInput("model names and versions are at most 64 characters")
    return list(await asyncio.gather(*(registry.get(name, pinned or version) for name, pinned in pairs)))


SuiteDep = Annotated[list[LoadedModel], Depends(_suite)]


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
    limit = settings.limits.max_upload_bytes
    if file is not None:
        return await read_upload(file, limit)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise HTTPException(*upload_problem(request, "image"))
    if not content_type.startswith(RAW_BODY_TYPES):
        raise HTTPException(
            415,
            "send the image as multipart field 'file' or as the raw body with Content-Type image/* or "
            "application/octet-stream",
        )
    data = await request.body()  # the body guard has already refused bodies over the limit while streaming
    if len(data) > limit:
        raise HTTPException(413, f"upload is larger than the {limit} byte limit")
    return data


ImageBytesDep = Annotated[bytes, Depends(_image_bytes)]


def is_json(content_type: str) -> bool:
    """``application/json`` or any ``application/*+json``, parameters (``; charset=utf-8``) aside."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def require_json(request: Request) -> None:
    """415 for a body that is not declared JSON: FastAPI would otherwise validate its raw bytes as the object."""
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise HTTPException(
            415, f"send the body as JSON with Content-Type: application/json (it was {content_type or 'not set'!r})"
        )


JsonBodyDep = Depends(require_json)


MaxFaces = Annotated[int | None, Query(ge=1, le=500, description="keep the largest N faces (capped by the server)")]
MinFaceSize = Annotated[
    int | None,
    Query(
        ge=1,
        le=10000,
        description="smallest face to search for and return (pixels); default: faces from 1/6 of the longest side "
        "(EMOTION_DETECTOR__MAX_SIDE). Smaller values find smaller faces and take longer",
    ),
]


async def _image_request(max_faces: MaxFaces = None, min_face_size: MinFaceSize = None) -> Requested:
    return Requested(max_faces=max_faces, min_face_size=min_face_size)


async def _video_request(
    sample_fps: Annotated[float, Query(gt=0, le=60, description="frames analysed per second of video")] = 5.0,
    max_frames: Annotated[
        int | None, Query(ge=1, description="frames analysed at most (capped by the server limit)")
    ] = None,
    start: Annotated[float, Query(ge=0, description="seconds")] = 0.0,
    end: Annotated[float | None, Query(gt=0, description="seconds")] = None,
    smoothing: Annotated[float, Query(ge=0, le=10, description="EMA time constant in seconds; 0 = off")] = 0.25,
    max_faces: Annotated[int | None, Query(ge=1, le=100)] = None,
    min_face_size: Annotated[
        int | None, Query(ge=1, le=10000, description="smallest face to search for and return (pixels)")
    ] = None,
) -> Requested:
    return Requested(max_faces, min_face_size, sample_fps, max_frames, start, end, smoothing)


ImageRequestDep = Annotated[Requested, Depends(_image_request)]
VideoRequestDep = Annotated[Requested, Depends(_video_request)]
