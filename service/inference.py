"""From face crops to predictions: shared preprocessing, the model call, calibration and valence/arousal."""

from __future__ import annotations

import numpy as np

from model_store import Manifest, derive_valence_arousal, preprocess, probabilities
from service.registry import LoadedModel
from service.schemas import AffectPrediction


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
