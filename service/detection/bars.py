"""The picture inside flat bars: letterbox and pillarbox bars, or the plain background a photo was pasted on.

A face that fills a photo touches the photo's edge. Put the same photo on a plain canvas (a slide, a letterboxed
frame) and the face no longer touches the image's edge: the detector draws its box about 4% larger and higher, and
the crop's margin holds canvas instead of the photo's repeated border. The label then changes for one face in
eight (issue 30, ``docs/stability.md``). Finding and cutting faces inside the bars gives the face what the picture
alone gives it.

Bars come in pairs on opposite edges: a flat run at one side only (a wall or a white backdrop beside a face) is the
scene's own, and stays picture. A bar is at least ``MIN_BAR`` lines at an edge, each of one colour (every channel
within ``TOLERANCE`` levels along the line) and the colour of the edge's first line. Compression leaves bars flat (an
mp4 round trip rings the few lines next to the picture by 7-10 levels: still bar). A picture with flat parts of its
own that reach two opposite edges may lose them: what is cut there is then filled by repeating the picture's border,
much what those parts held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np

from service.detection.base import Detection

TOLERANCE = 10  # levels a bar's line may vary by, per channel (mp4v leaves 0, and rings 7-10 next to the picture)
MIN_BAR = 4  # lines: thinner runs at an edge are a frame's border line or a scan artefact, not a bar

Box = tuple[int, int, int, int]


def _flat_run(low: np.ndarray, high: np.ndarray, first: np.ndarray) -> int:
    """How many of these lines, in order, are flat (``high - low`` within the tolerance in every channel) and of the
    colour of the edge's first line (``first``: its low and high); ``low``/``high`` are lines x channels."""
    flat = (high - low <= TOLERANCE).all(axis=1)
    same = (np.abs(high - first[1]) <= TOLERANCE).all(axis=1) & (np.abs(low - first[0]) <= TOLERANCE).all(axis=1)
    stops = np.flatnonzero(~(flat & same))
    return int(stops[0]) if stops.size else len(flat)


def _bar(lines: Callable[[int, int], tuple[np.ndarray, np.ndarray]], limit: int) -> int:
    """Width of the bar whose lines ``lines(a, b)`` gives (low and high of lines a..b, from the edge inwards, lines x
    channels), looked at in growing slabs so that an image without bars costs a few lines; at most ``limit``."""
    start, size, first = 0, 1, None  # one line first: most images have no bar, and their first line says so
    while start < limit:
        low, high = (v.astype(np.int16) for v in lines(start, min(limit, start + size)))
        if first is None:
            first = low[0], high[0]
        run = _flat_run(low, high, first)
        if run < len(low):
            start += run
            break
        start, size = start + len(low), size * 2
    return start if start >= MIN_BAR else 0


def _edge(pixels: np.ndarray, axis: int, from_end: bool) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Low and high of lines a..b from one edge: rows (``axis`` 0) or columns (1), counted from the start or the
    end. Rows go through OpenCV's reduce, columns through numpy (each is slow the other way)."""
    extent, channels = pixels.shape[axis], pixels.shape[2]

    def lines(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(extent - b, extent - a) if from_end else slice(a, b)
        if axis == 0:
            slab = pixels[span]
            low, high = (cv2.reduce(slab, 1, op).reshape(-1, channels) for op in (cv2.REDUCE_MIN, cv2.REDUCE_MAX))
        else:
            slab = pixels[:, span]
            low, high = slab.min(axis=0), slab.max(axis=0)
        return (low[::-1], high[::-1]) if from_end else (low, high)

    return lines


def _pair(first: int, second: int) -> tuple[int, int]:
    """Bars come in pairs (letterbox, pillarbox, a picture on a canvas): a flat run at one side only is the scene's
    own background (a wall or a white backdrop beside a face: 34 of the 900 shared photos have one), kept."""
    return (first, second) if first and second else (0, 0)


def picture_box(image: np.ndarray) -> Box:
    """``(x, y, width, height)`` of the picture inside the image's flat bars; the whole image where it has none, or
    where bars would leave less than a quarter of either side (a flat image is no picture in bars)."""
    height, width = image.shape[:2]
    pixels = image if image.ndim == 3 else image[:, :, None]
    top, bottom = _pair(*(_bar(_edge(pixels, 0, end), height // 2) for end in (False, True)))
    left, right = _pair(*(_bar(_edge(pixels, 1, end), width // 2) for end in (False, True)))
    if (height - top - bottom) * 4 < height or (width - left - right) * 4 < width:
        return 0, 0, width, height
    return left, top, width - left - right, height - top - bottom


@dataclasses.dataclass(frozen=True)
class Picture:
    """An image and the picture inside its bars (``picture_box``): faces are found and cut in ``view``, and their
    boxes reported in the image's pixels."""

    image: np.ndarray
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def of(cls, image: np.ndarray, find_bars: bool = True) -> Picture:
        """The picture of ``image``: inside its bars, or (``find_bars`` false) the whole image."""
        whole = (0, 0, image.shape[1], image.shape[0])
        return cls(image, *(picture_box(image) if find_bars else whole))

    @property
    def view(self) -> np.ndarray:
        """The picture's pixels (a view of the image, no copy)."""
        return self.image[self.y : self.y + self.height, self.x : self.x + self.width]

    def to_view(self, box: Box) -> Box:
        """An image box in the view's pixels."""
        x, y, w, h = box
        return x - self.x, y - self.y, w, h

    def to_image(self, found: Detection) -> Detection:
        """A detection in the view, in the image's pixels (a carried-forward box stays carried)."""
        if not (self.x or self.y):
            return found
        moved = found.shifted_landmarks(self.x, self.y)
        return dataclasses.replace(found, x=found.x + self.x, y=found.y + self.y, landmarks=moved)
