"""What every face detector backend gives and promises: boxes in the caller's pixels, and its smallest face."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np
from pydantic import BaseModel

# A photo larger than this is shrunk to it before its close-up scan: bordering 12 megapixels cost 50 ms, and the
# scan shrinks the canvas much further anyway.
CLOSE_UP_SIDE = 1024


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the original image, and a confidence in 0..1; detectors that find them (RetinaFace)
    add five landmarks (left eye, right eye, nose, left and right mouth corner; image left first), in the same
    pixels, for the head-pose proxies of ``service.quality``."""

    x: int
    y: int
    width: int
    height: int
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None
    carried: bool = False  # a video track's box kept for a sample without a search (no new look at the face)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    def moved(self, dx: int, dy: int, scale: float) -> Detection:
        """This box found in a region at ``(dx, dy)`` scanned ``scale`` times its size, in full-image pixels."""
        return Detection(
            dx + round(self.x / scale),
            dy + round(self.y / scale),
            round(self.width / scale),
            round(self.height / scale),
            self.score,
            self.shifted_landmarks(dx, dy, scale),
        )

    def shifted_landmarks(self, dx: float, dy: float, scale: float = 1.0) -> tuple[tuple[float, float], ...] | None:
        """The landmarks divided by ``scale``, then moved by ``(dx, dy)`` (None stays None)."""
        if self.landmarks is None:
            return None
        return tuple((round(dx + x / scale, 2), round(dy + y / scale, 2)) for x, y in self.landmarks)


class FaceDetector(Protocol):
    """A detector backend. Implementations own their settings (``Settings``, a pydantic model of their knobs) and
    are built from the service's detector group by ``from_settings``."""

    name: str
    Settings: ClassVar[type[BaseModel]]

    @classmethod
    def from_settings(cls, settings: Any) -> FaceDetector:
        """Build from the service's detector group (generic knobs) and this backend's own group in it."""
        ...

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        """Faces in a BGR image, largest first; ``min_face`` (pixels): search down to faces this small."""
        ...

    def smallest_face(self, scale: float = 1.0) -> float:
        """The smallest face (pixels of the image passed) found when that image is scanned ``scale`` times its size.

        Callers use it to size what they scan: video full-frame passes and the regions searched around tracks.
        """
        ...


def whole_image_if_small(image: np.ndarray, faces: list[Detection], max_side: int) -> list[Detection]:
    """No face found in an image no larger than ``max_side``: take it for a face crop (box = image, score 0)."""
    h, w = image.shape[:2]
    if faces or max_side <= 0 or max(h, w) > max_side:
        return faces
    return [Detection(0, 0, w, h, 0.0)]


def close_up_faces(
    detector: FaceDetector, image: np.ndarray, padding: float, min_face: int | None = None
) -> list[Detection]:
    """Faces that fill the photo, for a second look when a first scan found none.

    HOG (like most detectors) scores a window that holds some background around the face, so a face cropped to
    the photo's edges is missed; scanning again with a mid-gray border ``padding`` of the longest side wide on
    every side finds many of them (11 of the 20 photos of ``shared/data/photos`` HOG found nothing in, and no false
    face on 200 faceless images, where a mirrored border made 4). Boxes come back in the photo's pixels, clipped
    to it.
    """
    from service.detection.scaling import rescaled  # scaling imports this module

    if padding <= 0:
        return []
    h, w = image.shape[:2]
    shrink = min(1.0, CLOSE_UP_SIDE / max(h, w))  # a large photo is bordered at a size the scan shrinks it to anyway
    small = rescaled(image, shrink)
    pad = max(1, round(max(small.shape[:2]) * padding))
    gray = (128,) * (1 if image.ndim == 2 else image.shape[2])
    canvas = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=gray)
    out = []
    for found in detector.detect(canvas, None if min_face is None else max(1, round(min_face * shrink))):
        d = found.moved(-pad, -pad, 1.0).moved(0, 0, shrink)  # out of the border, back to the photo's pixels
        x0, y0 = max(d.x, 0), max(d.y, 0)
        x1, y1 = min(d.x + d.width, w), min(d.y + d.height, h)
        if x1 > x0 and y1 > y0:
            out.append(replace(d, x=x0, y=y0, width=x1 - x0, height=y1 - y0))
    return out
