"""Still-image prediction: a face crop, or a photo with every face detected."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, ImageBytesDep, ImageRequestDep, ModelDep, PipelinesDep, SettingsDep
from service.options import resolve_options
from service.schemas import ErrorDetail, FacePredictionResponse, ImagePredictionResponse, face_response, image_response

RAW_BODY = {"schema": {"type": "string", "format": "binary"}}
# Documents the raw-body alternative next to the multipart form FastAPI derives from ImageBytesDep.
RAW_IMAGE_BODY = {"requestBody": {"content": {"image/*": RAW_BODY, "application/octet-stream": RAW_BODY}}}
router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])
ERRORS = {
    code: {"description": text, "model": ErrorDetail}
    for code, text in {
        401: "missing or wrong API key",
        404: "unknown model or version",
        413: "upload or image too large",
        415: "unsupported format or content type",
        422: "corrupt or malformed input, invalid options, or wrong model kind",
        503: "model unavailable or server busy (see Retry-After)",
    }.items()
}


@router.post("/face", response_model=FacePredictionResponse, responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def predict_face(
    data: ImageBytesDep, model: ModelDep, pipelines: PipelinesDep, settings: SettingsDep
) -> FacePredictionResponse:
    """Classify an already-cropped face (no detection): the whole image is the face."""
    async with asyncio.timeout(settings.limits.request_timeout_s):
        return face_response(await pipelines.face.analyse_face(data, model))


@router.post("/image", response_model=ImagePredictionResponse, responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def predict_image(
    data: ImageBytesDep, model: ModelDep, pipelines: PipelinesDep, settings: SettingsDep, requested: ImageRequestDep
) -> ImagePredictionResponse:
    """Detect every face in a photo and classify each; faces are ordered largest first."""
    opts = resolve_options(settings, requested)
    async with asyncio.timeout(settings.limits.request_timeout_s):
        return image_response(await pipelines.face.analyse_image(data, model, opts))
