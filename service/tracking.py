"""Greedy IoU/centroid tracker: detections in sampled frames -> track ids that survive short misses.

A track is one person: a hard cut ends every track (``cut``), and an ``IdentityCheck`` may veto a match whose face is
not the track's person (the default checks nothing; a face-descriptor check plugs in here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0, min(ax1, bx1) - max(a[0], b[0])), max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def centroid_distance(a: Box, b: Box) -> float:
    """Distance between centres, in units of the larger box side."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return (dx * dx + dy * dy) ** 0.5 / max(a[2], a[3], b[2], b[3], 1)


class IdentityCheck(Protocol):
    """Whether a face can be a track's person, from the pixels (e.g. face descriptors): the tracker asks before it
    extends a track with a box, and reports every box it gives a track, so a check can remember its faces."""

    def same_person(self, track_id: int, frame: np.ndarray | None, box: Box) -> bool:
        """False vetoes the match: the box then goes to another track or starts a new one, and the track, if no
        other box is its, ends (its place shows someone else now)."""
        ...

    def observed(self, track_id: int, frame: np.ndarray | None, box: Box) -> None:
        """The face at ``box`` is now part of track ``track_id``."""
        ...

    def ended(self, track_ids: list[int]) -> None:
        """These tracks are over (a cut, or unseen too long): what the check kept for them can go."""
        ...


class AnyFace:
    """The default ``IdentityCheck``: position alone decides (every match stands)."""

    def same_person(self, track_id: int, frame: np.ndarray | None, box: Box) -> bool:
        return True

    def observed(self, track_id: int, frame: np.ndarray | None, box: Box) -> None:
        return None

    def ended(self, track_ids: list[int]) -> None:
        return None


# A track outlives this many of the sampling's intervals unmatched, however far apart they are: consecutive
# samples always continue it, one missed sample only within max_gap_s.
GAP_SAMPLES = 1.5


@dataclass
class _Track:
    track_id: int
    box: Box
    last_t: float
    points: list[int] = field(default_factory=list)
    previous: Box | None = None  # the box before ``box`` (how the face last moved)


class IouTracker:
    """Matches each frame's boxes to live tracks by IoU (or, failing that, a close centroid), greedily by score.

    A track not matched for more than ``max_gap_s`` seconds ends (or, where frames come further apart, for more than
    ``GAP_SAMPLES`` of their intervals: at 0.5 samples a second a still face stays one track), and so does every
    track at a ``cut`` and a track whose match ``identity`` vetoed (see ``IdentityCheck``); a face seen again later
    gets a new id. Ended tracks are kept in ``finished`` unless ``keep_finished`` is off (a live stream, which may run
    for hours).
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_centroid_distance: float = 0.6,
        max_gap_s: float = 1.5,
        identity: IdentityCheck | None = None,
        keep_finished: bool = True,
    ) -> None:
        self.iou_threshold, self.max_centroid, self.max_gap = iou_threshold, max_centroid_distance, max_gap_s
        self.identity: IdentityCheck = identity or AnyFace()
        self.keep_finished = keep_finished
        self.live: list[_Track] = []
        self.finished: list[_Track] = []
        self._next_id = 1
        self._last_t: float | None = None  # the previous update's time (the sampling's interval)

    def _end(self, tracks: list[_Track]) -> None:
        for track in tracks:
            self.live.remove(track)
            if self.keep_finished:
                self.finished.append(track)
        if tracks:
            self.identity.ended([tr.track_id for tr in tracks])

    def cut(self) -> None:
        """A shot change: every live track ends, so no track spans two shots (faces after it get new ids)."""
        self._end(list(self.live))

    def _score(self, track: _Track, box: Box) -> float:
        overlap = iou(track.box, box)
        if overlap >= self.iou_threshold:
            return 1.0 + overlap
        distance = centroid_distance(track.box, box)
        return 1.0 - distance if distance <= self.max_centroid else 0.0

    def _allowed_gap(self, t: float) -> float:
        """Seconds a track may go unmatched: ``max_gap_s``, or ``GAP_SAMPLES`` of the interval since the last
        update where frames come further apart than that allows (a low ``sample_fps``, a slide show)."""
        interval = 0.0 if self._last_t is None else t - self._last_t
        return max(self.max_gap, GAP_SAMPLES * interval)

    def update(self, t: float, boxes: list[Box], frame: np.ndarray | None = None) -> list[int]:
        """Assign a track id to each box of the frame at time ``t``; returns the ids in box order. ``frame`` is
        what the identity check looks at."""
        self._end([tr for tr in self.live if t - tr.last_t > self._allowed_gap(t)])
        self._last_t = t
        pairs = sorted(
            ((self._score(tr, b), ti, bi) for ti, tr in enumerate(self.live) for bi, b in enumerate(boxes)),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used_tracks: set[int] = set()
        vetoed: set[int] = set()
        for score, ti, bi in pairs:
            if score <= 0 or ti in used_tracks or ids[bi] is not None:
                continue
            track = self.live[ti]
            if not self.identity.same_person(track.track_id, frame, boxes[bi]):
                vetoed.add(ti)
                continue
            used_tracks.add(ti)
            track.previous, track.box, track.last_t = track.box, boxes[bi], t
            ids[bi] = track.track_id
        replaced = [self.live[ti] for ti in sorted(vetoed - used_tracks)]
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                track = _Track(self._next_id, box, t)
                self._next_id += 1
                self.live.append(track)
                ids[bi] = track.track_id
        self._end(replaced)
        for track_id, box in zip(ids, boxes, strict=True):
            if track_id is not None:
                self.identity.observed(track_id, frame, box)
        return [i for i in ids if i is not None]
