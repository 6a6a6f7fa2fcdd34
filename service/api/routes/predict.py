"""Still-image prediction: a face crop, or a photo with every face detected."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query

from service.api.deps import (
    ApiKeyDep,
    DetectorDep,
    ImageBytesDep,
    MetricsDep,
    ModelDep,
    SettingsDep,
)
from service.imaging import ImageError
from service.inference import affect, classify, face_batch, find_faces, image_response
from service.registry import LoadedModel
from service.schemas import FacePredictionResponse, ImagePredictionResponse

T = TypeVar("T")
RAW_BODY = {"schema": {"type": "string", "format": "binary"}}
# Documents the raw-body alternative next to the multipart form FastAPI derives from ImageBytesDep.
RAW_IMAGE_BODY = {"requestBody": {"content": {"image/*": RAW_BODY, "application/octet-stream": RAW_BODY}}}
router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])
ERRORS = {
    code: {"description": text}
    for code, text in {
        401: "missing or wrong API key",
        404: "unknown model",
        413: "upload or image too large",
        415: "unsupported format",
        422: "corrupt input or wrong model kind",
        503: "model unavailable or server busy",
    }.items()
}


def require_still_model(model: LoadedModel) -> None:
    if model.manifest.task == "clip-classification":
        raise HTTPException(422, f"model {model.manifest.name!r} classifies clips; send videos to /predict/video")


async def off_loop(fn: Callable[..., T], *args) -> T:
    """Run the CPU-bound part of a request in a worker thread; image problems become their 4xx."""
    try:
        return await asyncio.to_thread(fn, *args)
    except ImageError as exc:
        raise HTTPException(exc.status, exc.detail) from exc


@router.post("/face", response_model=FacePredictionResponse, responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def predict_face(data: ImageBytesDep, model: ModelDep, settings: SettingsDep) -> FacePredictionResponse:
    """Classify an already-cropped face (no detection): the whole image is the face."""
    require_still_model(model)
    async with asyncio.timeout(settings.request_timeout_s):
        batch = await off_loop(face_batch, data, settings.max_image_pixels, model.manifest, settings.tta)
        probs, va = await classify(model, batch, settings.tta)
    pred = affect(probs, va, model.manifest.labels)[0]
    return FacePredictionResponse(
        **pred.model_dump(), model=model.ref, valence_arousal_source=model.manifest.valence_arousal
    )


@router.post("/image", response_model=ImagePredictionResponse, responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def predict_image(
    data: ImageBytesDep,
    model: ModelDep,
    settings: SettingsDep,
    detector: DetectorDep,
    metrics: MetricsDep,
    max_faces: Annotated[int | None, Query(ge=1, le=500, description="keep the largest N faces")] = None,
    min_face_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=10000,
            description="smallest face to search for and return (pixels); default: faces from 1/6 of the longest "
            "side (EMOTION_DETECTOR_MAX_SIDE). Smaller values find smaller faces and take longer",
        ),
    ] = None,
) -> ImagePredictionResponse:
    """Detect every face in a photo and classify each; faces are ordered largest first."""
    require_still_model(model)
    limit = min(max_faces or settings.max_faces, settings.max_faces)
    smallest = min_face_size or settings.min_face_size
    async with asyncio.timeout(settings.request_timeout_s):
        image, faces, batch = await off_loop(find_faces, data, settings, detector, model.manifest, limit, smallest)
        metrics.faces.inc(len(faces))
        probs, va = await classify(model, batch, settings.tta)
    return image_response(image, faces, probs, va, model)
