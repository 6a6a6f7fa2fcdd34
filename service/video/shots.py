"""A track is one person, as far as pixels tell: hard cuts (shot changes) between consecutive sampled frames, and a
face replaced in place by another, from tiny gray thumbnails.

Each frame becomes a 64 x 48 gray thumbnail (lightly blurred, so sub-pixel motion does not count). Each 8 x 8 block
of it is looked for in an earlier thumbnail at every shift within ``SEARCH`` pixels (1/16 of the frame's width and
height, about 40 px of a 640 px frame); a block that no shift explains (mean absolute difference over half the
block's own contrast, after matching the two frames' brightness) is *new*, not moved or relit.

- ``ShotDetector``: when the share of new blocks since the last sample reaches its threshold, the sample starts a new
  shot, and the tracker ends every track. Comparing sampled frames, not decoded ones, catches a cut wherever it falls
  between two samples.
- ``PictureContinuity``: an ``IdentityCheck`` for the tracker. Where a track's box lies mostly on blocks that are new
  since the track was last seen, its face was replaced (another person's photo in the same place, or a cut of part of
  the picture): the match is vetoed and the face starts a new track.

Motion faster than ``SEARCH`` per sample can read as change: a new track then, never a wrong one. Pure arithmetic on
arrays: no model, no files.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

THUMB_SIZE = (64, 48)  # width, height of the thumbnail; the frame's aspect is not kept (blocks follow the frame)
BLOCK = 8  # thumbnail pixels per block side: an 8 x 6 grid of blocks
SEARCH = 4  # largest shift searched, in thumbnail pixels, each way
BLUR_SIGMA = 0.8  # thumbnail blur (3 x 3), so sub-pixel motion and sampling noise do not count as change
# A block is new when its best shift still differs by more than RELATIVE_CHANGE of its own contrast (mean absolute
# deviation, plus CONTRAST_FLOOR gray levels) and by more than MIN_CHANGE gray levels: two different faces in the same
# place differ little in absolute terms (smooth, similar skin), but by much of what contrast they have.
RELATIVE_CHANGE = 0.5
CONTRAST_FLOOR = 4.0
MIN_CHANGE = 5.0
# Measured on 60 pairs of the shared photos (python -m benchmarks.shot_cuts): a cut between two photos filling the
# frame makes 0.69-1.0 of the blocks new (59 of 60 at >= 0.75); one 250 px photo replaced by another in the same place
# of a static 640 x 480 frame 0.10-0.27; the same photo moved 12 or 30 px, shaken 4 px, zoomed 4 %, 15 % darker,
# tilted 10 degrees or 20 % nearer <= 0.06. A photo popping in or out of a static scene is new content too, but not a
# cut: the frame-wide threshold is high, and a face replaced in a smaller part of the picture is caught per track
# instead (REGION_CHANGE).
DEFAULT_THRESHOLD = 0.75
# Share of a track's box (by area) on blocks new since the track was last seen that vetoes extending it: 120 of 120
# replaced faces (60 in place, 60 by a full-frame cut) reach it, 0 of 420 moved, shaken, zoomed, relit, tilted 10
# degrees or 20 % nearer ones.
REGION_CHANGE = 0.5


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """The frame (BGR or gray) as a blurred 64 x 48 uint8 gray thumbnail; large frames are first shrunk bilinearly
    to twice that size (cheap), then averaged down (``INTER_AREA`` on a full HD frame alone costs ~5 ms)."""
    width, height = THUMB_SIZE
    if frame.shape[1] > 2 * width or frame.shape[0] > 2 * height:
        frame = cv2.resize(frame, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(frame, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY if small.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return cv2.GaussianBlur(small, (3, 3), BLUR_SIGMA)


def relit(before: np.ndarray, after: np.ndarray, grid: tuple[int, int]) -> float:
    """The gain that brings ``after``'s brightness to ``before``'s: the median over blocks of the ratio of their
    means, so a change of part of the picture (a photo popping in) does not relight the rest."""
    ratios = np.maximum(block_means(before, grid), 1.0) / np.maximum(block_means(after, grid), 1.0)  # float64
    return float(np.median(ratios))


def new_blocks(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per block of ``after`` (thumbnails), whether no shift of ``before`` within ``SEARCH`` explains it: a bool
    array of the block grid's shape. ``after`` is first relit to ``before``'s brightness (``relit``)."""
    return block_changes(before, after)[0]


def block_changes(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``after`` (thumbnails): whether it is new (``new_blocks``), and whether it changed where it
    is (not even the zero shift explains it: new, or moved)."""
    height, width = after.shape
    grid = (width // BLOCK, height // BLOCK)
    after = cv2.convertScaleAbs(after, alpha=relit(before, after, grid))  # saturated to uint8
    # every shift of ``before`` stacked into one tall image (uint8: 250 KB), so a few OpenCV calls compare them all
    padded = cv2.copyMakeBorder(before, SEARCH, SEARCH, SEARCH, SEARCH, cv2.BORDER_REPLICATE)
    shifts = (2 * SEARCH + 1) ** 2
    shifted = np.ascontiguousarray(sliding_window_view(padded, (height, width))).reshape(shifts * height, width)
    diffs = cv2.absdiff(shifted, np.tile(after, (shifts, 1)))
    per_shift = block_means(diffs, (grid[0], grid[1] * shifts)).reshape(shifts, grid[1], grid[0])
    means = cv2.resize(block_means(after, grid), (width, height), interpolation=cv2.INTER_NEAREST)
    contrast = block_means(cv2.absdiff(after, means), grid)

    def differs(diff: np.ndarray) -> np.ndarray:
        return (diff > RELATIVE_CHANGE * (contrast + CONTRAST_FLOOR)) & (diff > MIN_CHANGE)

    return differs(per_shift.min(axis=0)), differs(per_shift[shifts // 2])  # the middle shift is (0, 0)


def block_means(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The mean of each block of ``image`` (whole blocks: the thumbnail's sides are multiples of ``BLOCK``)."""
    return cv2.resize(image, grid, interpolation=cv2.INTER_AREA)


def new_share(before: np.ndarray, after: np.ndarray) -> float:
    """Share of ``after``'s blocks that are new since ``before`` (thumbnails): 0 for the same picture, ~1 for
    another scene."""
    return float(new_blocks(before, after).mean())


def box_share(new: np.ndarray, box: tuple[int, int, int, int], frame_shape: tuple[int, ...]) -> float:
    """Share of ``box`` (frame pixels) that lies on new blocks of ``new`` (a block grid over the whole frame)."""
    rows, cols = new.shape
    height, width = frame_shape[:2]
    x, y, w, h = box
    weights = np.outer(cell_overlaps(y, h, height, rows), cell_overlaps(x, w, width, cols))
    total = float(weights.sum())
    return float((weights * new).sum()) / total if total > 0 else 0.0


def cell_overlaps(start: float, size: float, extent: int, count: int) -> np.ndarray:
    """Each of ``count`` equal cells along ``extent`` pixels: its pixels in ``[start, start + size)``."""
    edges = np.arange(count + 1) * (extent / count)
    return np.clip(np.minimum(edges[1:], start + size) - np.maximum(edges[:-1], start), 0.0, None)


class ShotDetector:
    """Keeps the thumbnails of the last two sampled frames; ``is_cut(frame)`` says whether ``frame`` starts a new
    shot. ``threshold`` is the share of new blocks that makes a cut; ``None`` turns detection off (never a cut, no
    thumbnails)."""

    def __init__(self, threshold: float | None = DEFAULT_THRESHOLD) -> None:
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"cut threshold {threshold} must be in (0, 1], or None for off")
        self.threshold = threshold
        self.previous: np.ndarray | None = None
        self.current: np.ndarray | None = None  # the last frame's thumbnail
        self.new: np.ndarray | None = None  # its new blocks since the frame before (None for the first)
        self.changed: np.ndarray | None = None  # its blocks that changed where they are (new, or moved)
        self.last_share = 0.0  # the share of new blocks on the last frame (0 for the first or with detection off)
        self.cuts = 0

    def is_cut(self, frame: np.ndarray, compare: bool = True, blocks: bool = False) -> bool:
        """Whether ``frame`` (the next sampled frame) starts a new shot; the first frame never does. ``compare=False``
        (nothing tracked, so a cut would change nothing): never a cut then, and only its thumbnail is kept, or with
        ``blocks`` its new and changed blocks too (``new``, ``changed``: for ``service.video.quiet``)."""
        if self.threshold is None:
            return False
        self.previous, self.current = self.current, thumbnail(frame)
        looked = self.previous is not None and (compare or blocks)
        self.new, self.changed = block_changes(self.previous, self.current) if looked else (None, None)
        self.last_share = 0.0 if self.new is None else float(self.new.mean())
        cut = compare and self.last_share >= self.threshold
        self.cuts += cut
        return cut


class PictureContinuity:
    """The tracker's ``IdentityCheck`` from pixels: a track is extended with a box only if less than ``threshold`` of
    the box lies on blocks that are new since the track was last seen; otherwise its face was replaced in place.

    Reads the thumbnails of ``shots``, which must have seen the frame (``is_cut``) before the tracker does. A track's
    last thumbnail is kept by reference (one per sample, shared by its tracks) until the track ends."""

    def __init__(self, shots: ShotDetector, threshold: float = REGION_CHANGE) -> None:
        self.shots, self.threshold = shots, threshold
        self.seen: dict[int, np.ndarray] = {}  # track id -> the thumbnail of the sample it was last seen in
        self.replaced = 0  # matches vetoed (a face replaced under a track)
        self._maps: dict[int, np.ndarray] = {}  # id(an earlier thumbnail) -> its new blocks against ``_after``
        self._after: np.ndarray | None = None

    def _new_since(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """``new_blocks(before, after)``, computed once a sample per earlier thumbnail."""
        if after is not self._after:
            self._after, self._maps = after, {}
        if before is self.shots.previous and self.shots.new is not None:
            return self.shots.new  # the usual case: seen on the last sample, already compared
        if id(before) not in self._maps:
            self._maps[id(before)] = new_blocks(before, after)
        return self._maps[id(before)]

    def changed(self, track_id: int, frame: np.ndarray | None, box: tuple[int, int, int, int]) -> bool:
        """Whether the picture at ``box`` is mostly new since track ``track_id`` was last seen (False when unknown)."""
        before, after = self.seen.get(track_id), self.shots.current
        if before is None or after is None or frame is None or before is after:
            return False
        return box_share(self._new_since(before, after), box, frame.shape) >= self.threshold

    def same_person(self, track_id: int, frame: np.ndarray | None, box: tuple[int, int, int, int]) -> bool:
        if not self.changed(track_id, frame, box):
            return True
        self.replaced += 1
        return False

    def observed(self, track_id: int, frame: np.ndarray | None, box: tuple[int, int, int, int]) -> None:
        if self.shots.current is not None:
            self.seen[track_id] = self.shots.current

    def ended(self, track_ids: list[int]) -> None:
        for track_id in track_ids:
            self.seen.pop(track_id, None)
