"""Valence/arousal derived from class probabilities through circumplex coordinates.

Coordinates follow Russell's circumplex (1980) as placed by Warriner et al.-style norms for the
basic-emotion words, scaled to [-1, 1]; they are a documented convention, not a measurement.
"""

from __future__ import annotations

import numpy as np

CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.0, 0.0),
    "contempt": (-0.55, 0.20),
}


def derive_valence_arousal(probs: np.ndarray, labels: list[str]) -> np.ndarray:
    """``N x len(labels)`` probabilities -> ``N x 2`` (valence, arousal): the probability-weighted coordinates."""
    coords = np.array([CIRCUMPLEX.get(label, (0.0, 0.0)) for label in labels], dtype=np.float32)
    return np.asarray(probs, dtype=np.float32) @ coords


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logits / temperature`` along the last axis (temperature from the manifest's calibration)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
