"""Small in-memory objects several test files build."""

from __future__ import annotations

from model_store import Manifest

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def manifest(labels: list[str] | None = None, **overrides) -> Manifest:
    """A valid face-classification manifest (no files), with ``overrides`` applied."""
    fields = {
        "name": "m",
        "version": "1.0.0",
        "task": "face-classification",
        "architecture": "emotion_cnn",
        "labels": labels or FER_LABELS,
        "input": {"height": 48, "width": 48},
    }
    return Manifest(**{**fields, **overrides})
