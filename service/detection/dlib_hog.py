"""dlib's frontal HOG + linear SVM detector (5 pose filters), the shipped default.

Chosen by measurement on the real photos in ``shared/data/photos`` (``benchmarks/eval_photos.py``): it needs no
downloaded model file (the detector is compiled into ``dlib-bin``) and finds no faces in faceless images at the
default threshold.
"""

from __future__ import annotations

import os
import queue
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.detection.base import Detection
from service.detection.scaling import rescaled, scan_scale, to_detections

HOG_WINDOW = 80  # dlib's frontal detector finds faces from about this size, in pixels of the image it scans


class DlibHogSettings(BaseModel):
    """``EMOTION_DETECTOR__DLIB_HOG__*``."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(-0.2, ge=-2.0, le=2.0, description="dlib's adjust_threshold (lower finds more)")
    rotation_fallback: bool = Field(
        False,
        description="retry at +-20 degrees when no face is found (finds a few more tilted faces, adds false ones)",
    )
    min_side: int = Field(256, ge=0, le=4096, description="smaller images are enlarged to this before scanning")


def _hog_score(raw: float) -> float:
    """dlib's SVM margin mapped into 0..1 (0.5 at -0.5)."""
    return float(1.0 / (1.0 + np.exp(-2.0 * (raw + 0.5))))


def _rotate(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = gray.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(gray, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE), cv2.invertAffineTransform(matrix)


class DlibHogDetector:
    """HOG on a rescaled grayscale copy, from a pool of detector objects (dlib releases the GIL while scanning)."""

    name = "dlib-hog"
    Settings = DlibHogSettings

    def __init__(
        self,
        threshold: float = -0.2,
        max_side: int = 480,
        rotation_fallback: bool = False,
        min_side: int = 256,
        instances: int = 0,
        max_pixels: int = 2_000_000,
    ) -> None:
        """``max_side``: larger images are shrunk to it; ``min_side``: smaller ones are enlarged to it, since HOG
        needs faces of ~80 px (after enlarging, a face is found in 4 of 5 tight 48 px FER2013 crops).
        ``instances``: detector objects in the pool (0 = one per CPU core, at most 8). ``max_pixels``: the most
        pixels scanned when a caller asks for small faces (time grows with it)."""
        import dlib

        # Concurrent requests detect in parallel, each on its own object (one is not documented as thread-safe).
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(instances or min(8, os.cpu_count() or 1)):
            self._pool.put(dlib.get_frontal_face_detector())
        self.threshold, self.max_side, self.min_side, self.max_pixels = threshold, max_side, min_side, max_pixels
        self.rotation_fallback = rotation_fallback

    @classmethod
    def from_settings(cls, settings: Any) -> DlibHogDetector:
        own: DlibHogSettings = settings.dlib_hog
        return cls(
            threshold=own.threshold,
            max_side=settings.max_side,
            rotation_fallback=own.rotation_fallback,
            min_side=own.min_side,
            instances=settings.instances,
            max_pixels=settings.max_pixels,
        )

    def smallest_face(self, scale: float = 1.0) -> float:
        return HOG_WINDOW / scale

    def _run(self, gray: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        detector = self._pool.get()
        try:
            rects, scores, _ = detector.run(gray, 0, self.threshold)
        finally:
            self._pool.put(detector)
        return [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in zip(rects, scores, strict=True)]

    def _rotated(self, gray: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        for degrees in (20.0, -20.0):
            rotated, inverse = _rotate(gray, degrees)
            found = self._run(rotated)
            if found:
                out = []
                for x0, y0, x1, y1, s in found:
                    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float32) @ inverse.T
                    (ax, ay), (bx, by) = corners.min(0), corners.max(0)
                    out.append((ax, ay, bx, by, s))
                return out
        return []

    def scale_for(self, h: int, w: int, min_face: int | None = None) -> float:
        """The scale an ``h x w`` image is scanned at.

        By default small images are enlarged to ``min_side`` and large ones shrunk to ``max_side``, which finds
        faces from ``HOG_WINDOW / max_side`` of the longest side up. ``min_face`` instead scales so that faces of
        that many pixels reach the HOG window (cheaper for large faces, dearer for small ones), within
        ``max_pixels``.
        """
        return scan_scale(
            h,
            w,
            HOG_WINDOW,
            min_face=min_face,
            min_side=self.min_side,
            max_side=self.max_side,
            max_pixels=self.max_pixels,
        )

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = self.scale_for(h, w, min_face)
        small = rescaled(gray, scale)
        found = self._run(small) or (self._rotated(small) if self.rotation_fallback else [])
        return to_detections(found, scale, h, w, _hog_score)
