"""From face crops to predictions: shared preprocessing, the model call, calibration and valence/arousal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from model_store import Manifest, crop_face, derive_valence_arousal, preprocess, probabilities
from service.detection import Detection, FaceDetector, whole_image_if_small
from service.imaging import decode_image
from service.registry import LoadedModel
from service.schemas import AffectPrediction, Box, DetectedFace, ImagePredictionResponse

if TYPE_CHECKING:
    from service.config import Settings


def affect(probs: np.ndarray, va: np.ndarray | None, labels: list[str]) -> list[AffectPrediction]:
    out = []
    for i, row in enumerate(probs):
        valence, arousal = (
            (float(np.clip(va[i, 0], -1, 1)), float(np.clip(va[i, 1], -1, 1))) if va is not None else (None, None)
        )
        out.append(
            AffectPrediction(
                emotions={label: round(float(p), 6) for label, p in zip(labels, row, strict=True)},
                dominant=labels[int(row.argmax())],
                valence=valence,
                arousal=arousal,
            )
        )
    return out


def postprocess(
    outputs: dict[str, np.ndarray], manifest: Manifest, n: int, tta: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs for ``n`` faces (plus their mirrors with ``tta``) -> probabilities and valence/arousal."""

    def merge(x: np.ndarray) -> np.ndarray:
        return (x[:n] + x[n:]) / 2 if tta else x

    probs = probabilities(merge(outputs[manifest.outputs[0]]), manifest.calibration_temperature)
    if manifest.valence_arousal == "predicted":
        return probs, merge(outputs["valence_arousal"])
    if manifest.valence_arousal == "derived":
        return probs, derive_valence_arousal(probs, manifest.labels)
    return probs, None


def prepare(crops: list[np.ndarray], manifest: Manifest, tta: bool) -> np.ndarray:
    """Face crops -> the model's input batch (the shared preprocessing; mirrors appended with ``tta``)."""
    if not crops:
        return np.zeros((0, manifest.input.channels, manifest.input.height, manifest.input.width), np.float32)
    return preprocess(crops, manifest.input, hflip_tta=tta)


async def classify(model: LoadedModel, batch: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A prepared batch -> probabilities ``N x labels`` and valence/arousal ``N x 2`` (or None)."""
    n = len(batch) // 2 if tta else len(batch)
    if n == 0:
        return np.zeros((0, len(model.manifest.labels)), np.float32), None
    return postprocess(await model.infer(batch), model.manifest, n, tta)


async def classify_faces(
    model: LoadedModel, crops: list[np.ndarray], tta: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities ``N x labels`` and valence/arousal ``N x 2`` (or None) for face crops."""
    return await classify(model, prepare(crops, model.manifest, tta), tta)


def face_batch(data: bytes, max_pixels: int, manifest: Manifest, tta: bool) -> np.ndarray:
    """Decode an uploaded face crop and preprocess it (the CPU-bound part of a face request, for one thread hop)."""
    return prepare([decode_image(data, max_pixels)], manifest, tta)


def find_faces(
    data: bytes, settings: Settings, detector: FaceDetector, manifest: Manifest, limit: int, smallest: int | None
) -> tuple[np.ndarray, list[Detection], np.ndarray]:
    """Decode a photo, detect its faces (largest first, down to ``smallest`` px, at most ``limit``) and
    preprocess their crops: the CPU-bound part of an image request, for one thread hop."""
    image = decode_image(data, settings.max_image_pixels)
    faces = whole_image_if_small(image, detector.detect(image, smallest), settings.whole_image_fallback_max_side)
    faces = [f for f in faces if smallest is None or min(f.width, f.height) >= smallest][:limit]
    return image, faces, prepare([crop_face(image, f.box, manifest.input) for f in faces], manifest, settings.tta)


def image_response(
    image: np.ndarray, faces: list[Detection], probs: np.ndarray, va: np.ndarray | None, model: LoadedModel
) -> ImagePredictionResponse:
    """The ``/predict/image`` answer for detected faces and their predictions."""
    preds = affect(probs, va, model.manifest.labels)
    return ImagePredictionResponse(
        width=image.shape[1],
        height=image.shape[0],
        model=model.ref,
        valence_arousal_source=model.manifest.valence_arousal,
        faces=[
            DetectedFace(
                **p.model_dump(), box=Box(x=f.x, y=f.y, width=f.width, height=f.height), score=round(f.score, 4)
            )
            for f, p in zip(faces, preds, strict=True)
        ],
    )
