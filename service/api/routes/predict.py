"""Still-image prediction: a face crop, or a photo with every face detected."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, UploadFile

from model_store import crop_face
from service.api.deps import (
    ApiKeyDep,
    DetectorDep,
    MetricsDep,
    ModelDep,
    SettingsDep,
    read_upload,
)
from service.config import Settings
from service.detection import whole_image_if_small
from service.imaging import ImageError, decode_image
from service.inference import affect, classify_faces
from service.registry import LoadedModel
from service.schemas import (
    Box,
    DetectedFace,
    FacePredictionResponse,
    ImagePredictionResponse,
    ModelRef,
)

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


def model_ref(model: LoadedModel) -> ModelRef:
    return ModelRef(name=model.manifest.name, version=model.manifest.version)


def require_still_model(model: LoadedModel) -> None:
    if model.manifest.task == "clip-classification":
        raise HTTPException(422, f"model {model.manifest.name!r} classifies clips; send videos to /predict/video")


async def decode_upload(file: UploadFile, settings: Settings) -> np.ndarray:
    data = await read_upload(file, settings.max_upload_bytes)
    try:
        return await asyncio.to_thread(decode_image, data, settings.max_image_pixels)
    except ImageError as exc:
        raise HTTPException(exc.status, exc.detail) from exc


@router.post("/face", response_model=FacePredictionResponse, responses=ERRORS)
async def predict_face(file: UploadFile, model: ModelDep, settings: SettingsDep) -> FacePredictionResponse:
    """Classify an already-cropped face (no detection): the whole image is the face."""
    require_still_model(model)
    image = await decode_upload(file, settings)
    async with asyncio.timeout(settings.request_timeout_s):
        probs, va = await classify_faces(model, [image], settings.tta)
    pred = affect(probs, va, model.manifest.labels)[0]
    return FacePredictionResponse(
        **pred.model_dump(), model=model_ref(model), valence_arousal_source=model.manifest.valence_arousal
    )


@router.post("/image", response_model=ImagePredictionResponse, responses=ERRORS)
async def predict_image(
    file: UploadFile,
    model: ModelDep,
    settings: SettingsDep,
    detector: DetectorDep,
    metrics: MetricsDep,
    max_faces: Annotated[int | None, Query(ge=1, le=500, description="keep the largest N faces")] = None,
    min_face_size: Annotated[
        int | None, Query(ge=1, le=10000, description="ignore faces smaller than this (pixels)")
    ] = None,
) -> ImagePredictionResponse:
    """Detect every face in a photo and classify each; faces are ordered largest first."""
    require_still_model(model)
    image = await decode_upload(file, settings)
    limit = min(max_faces or settings.max_faces, settings.max_faces)
    smallest = min_face_size or settings.min_face_size
    async with asyncio.timeout(settings.request_timeout_s):
        faces = await asyncio.to_thread(detector.detect, image)
        faces = whole_image_if_small(image, faces, settings.whole_image_fallback_max_side)
        faces = [f for f in faces if min(f.width, f.height) >= smallest][:limit]
        metrics.faces.inc(len(faces))
        probs, va = await classify_faces(
            model, [crop_face(image, f.box, model.manifest.input) for f in faces], settings.tta
        )
    preds = affect(probs, va, model.manifest.labels)
    return ImagePredictionResponse(
        width=image.shape[1],
        height=image.shape[0],
        model=model_ref(model),
        valence_arousal_source=model.manifest.valence_arousal,
        faces=[
            DetectedFace(
                **p.model_dump(), box=Box(x=f.x, y=f.y, width=f.width, height=f.height), score=round(f.score, 4)
            )
            for f, p in zip(faces, preds, strict=True)
        ],
    )
