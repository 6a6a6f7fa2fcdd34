"""Face detection behind a small interface; the shipped implementation is dlib's built-in HOG detector.

Chosen by measurement on the 500 real photos in ``shared/data/photos`` (see ``scripts/eval_detector.py``):
it needs no downloaded model file (the detector is compiled into ``dlib-bin``) and finds no faces in
faceless images at the default threshold.
"""

from __future__ import annotations

import math
import os
import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from service.config import Settings


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the original image, and a confidence in 0..1."""

    x: int
    y: int
    width: int
    height: int
    score: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    @property
    def area(self) -> int:
        return self.width * self.height


class FaceDetector(Protocol):
    name: str

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        """Faces in a BGR image, largest first; ``min_face`` (pixels): search down to faces this small."""
        ...


HOG_WINDOW = 80  # dlib's frontal detector finds faces from about this size, in pixels of the image it scans


def _rotate(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = gray.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(gray, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE), cv2.invertAffineTransform(matrix)


class DlibHogDetector:
    """dlib's frontal HOG + linear SVM detector (5 pose filters), on a downscaled grayscale copy."""

    name = "dlib-hog"

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

        # dlib releases the GIL while it scans, so concurrent requests detect in parallel, each on its own
        # detector object (one object is not documented as thread-safe).
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(instances or min(8, os.cpu_count() or 1)):
            self._pool.put(dlib.get_frontal_face_detector())
        self.threshold, self.max_side, self.min_side, self.max_pixels = threshold, max_side, min_side, max_pixels
        self.rotation_fallback = rotation_fallback

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
        if min_face is not None:
            return min(HOG_WINDOW / min_face, math.sqrt(self.max_pixels / (h * w)))
        if max(h, w) < self.min_side:
            return self.min_side / max(h, w)
        return min(1.0, self.max_side / max(h, w))

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = self.scale_for(h, w, min_face)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(gray, size, interpolation=interp) if scale != 1 else gray
        found = self._run(small) or (self._rotated(small) if self.rotation_fallback else [])
        faces = []
        for x0, y0, x1, y1, s in found:
            x0, y0 = max(0, round(x0 / scale)), max(0, round(y0 / scale))
            x1, y1 = min(w, round(x1 / scale)), min(h, round(y1 / scale))
            if x1 > x0 and y1 > y0:  # callers filter by size, in the pixels of the image they passed
                faces.append(Detection(x0, y0, x1 - x0, y1 - y0, float(1.0 / (1.0 + np.exp(-2.0 * (s + 0.5))))))
        return sorted(faces, key=lambda d: d.area, reverse=True)


def whole_image_if_small(image: np.ndarray, faces: list[Detection], max_side: int) -> list[Detection]:
    """No face found in an image no larger than ``max_side``: take it for a face crop (box = image, score 0)."""
    h, w = image.shape[:2]
    if faces or max_side <= 0 or max(h, w) > max_side:
        return faces
    return [Detection(0, 0, w, h, 0.0)]


def create_detector(name: str, **kwargs) -> FaceDetector:
    if name == "dlib-hog":
        return DlibHogDetector(**kwargs)
    raise ValueError(f"unknown face detector {name!r}; available: dlib-hog")


def detector_from_settings(settings: Settings) -> FaceDetector:
    """The detector the settings describe (the app's lifespan and the offline scorer both build it here)."""
    return create_detector(
        settings.detector,
        threshold=settings.detector_threshold,
        max_side=settings.detector_max_side,
        rotation_fallback=settings.detector_rotation_fallback,
        instances=settings.detector_instances,
        max_pixels=settings.detector_max_pixels,
    )
