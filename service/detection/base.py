"""What every face detector backend gives and promises: boxes in the caller's pixels, and its smallest face."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel


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
