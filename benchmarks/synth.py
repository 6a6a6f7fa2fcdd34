"""Synthetic media with known content for tests and benchmarks: photos on a canvas, clips with timed faces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Appearance:
    """``image`` shows from ``start`` to ``end`` seconds, its top-left moving from ``xy`` at ``velocity`` px/s."""

    image: np.ndarray
    start: float
    end: float
    xy: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, faceless textured background."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.5), (width, height), interpolation=cv2.INTER_CUBIC)


def paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - y : y1 - y, x0 - x : x1 - x]


def photo_on_canvas(
    image: np.ndarray, width: int = 640, height: int = 480, xy: tuple[int, int] | None = None
) -> np.ndarray:
    canvas = background(width, height)
    x, y = xy or ((width - image.shape[1]) // 2, (height - image.shape[0]) // 2)
    paste(canvas, image, x, y)
    return canvas


def write_clip(
    path: Path,
    appearances: list[Appearance],
    duration: float,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 480),
    fourcc: str = "mp4v",
) -> Path:
    """Render the appearances over a static background into a video file."""
    width, height = size
    base = background(width, height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} video to {path}")
    try:
        for i in range(round(duration * fps)):
            t, frame = i / fps, base.copy()
            for a in appearances:
                if a.start <= t < a.end:
                    dt = t - a.start
                    paste(frame, a.image, int(a.xy[0] + a.velocity[0] * dt), int(a.xy[1] + a.velocity[1] * dt))
            writer.write(frame)
    finally:
        writer.release()
    return path
