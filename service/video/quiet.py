"""Whole-frame passes where they can find something: a scheduled pass is put off while nothing has changed outside
the regions already searched around live tracks since the last one.

A whole-frame pass looks for faces that are not tracked yet. Over a picture whose blocks (``service.video.shots``'
thumbnail grid) are all as they were at the last pass, or changed only where live tracks are searched anyway, the
detector would find what it found then: nothing new. So such a pass is put off, for at most ``max_gap`` samples
after the last one, which bounds how late a face that appears without changing a block (slowly, or too small to
count) can be found. With nothing tracked, a pass is due on every sample and the same rule spaces them over a still
picture. Each sample's changed blocks against the sample before (new content, or content that moved: a pan, a
person walking in) that lie mostly outside the live tracks' search regions make the picture *changed* until the
next pass. Pure arithmetic on block grids: no model, no files.
"""

from __future__ import annotations

import numpy as np

from model_store import expand_box
from service.tracking import Box
from service.video.shots import cell_overlaps

COVERED = 0.5  # a block this much inside the live tracks' search regions is searched anyway (by area)


def coverage(grid: tuple[int, int], regions: list[Box], frame_shape: tuple[int, ...]) -> np.ndarray:
    """Per block of a ``grid`` (rows, columns) laid over the frame, the share of its area inside ``regions`` (frame
    pixels; overlapping regions counted once per region, capped at 1)."""
    rows, cols = grid
    height, width = frame_shape[:2]
    share = np.zeros(grid)
    for x, y, w, h in regions:
        share += np.outer(cell_overlaps(y, h, height, rows), cell_overlaps(x, w, width, cols))
    return np.minimum(share / ((height / rows) * (width / cols)), 1.0)


class QuietWatch:
    """Whether a scheduled whole-frame pass can be put off: call ``observe`` once a sample (before detecting),
    ``quiet`` to ask, ``passed`` after a pass ran."""

    def __init__(self, context: float) -> None:
        """``context``: how far around a track's box it is searched (``regions.ROI_CONTEXT``)."""
        self.context = context
        self.since = 0  # samples observed since the last pass
        self.changed = True  # the picture changed outside the searched regions since the last pass (or unknown)

    def observe(self, new: np.ndarray | None, live: list[Box], frame_shape: tuple[int, ...]) -> None:
        """This sample's changed blocks against the sample before (``ShotDetector.changed``; None: unknown, the first
        sample or a cut) and the boxes of the tracks live before it, which are searched around."""
        self.since += 1
        if new is None:
            self.changed = True
        elif not self.changed and new.any():
            width, height = frame_shape[1], frame_shape[0]
            regions = [expand_box(box, self.context, (width, height)) for box in live]
            self.changed = bool((new & (coverage(new.shape, regions, frame_shape) < COVERED)).any())

    def quiet(self, max_gap: int) -> bool:
        """Whether a pass due now may be put off: nothing changed outside the searched regions since the last pass,
        which ran fewer than ``max_gap`` samples ago (0: never put off)."""
        return not self.changed and self.since < max_gap

    def passed(self) -> None:
        self.since, self.changed = 0, False
