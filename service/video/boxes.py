"""Steady classification boxes: each track's box filtered over its samples, so a still face is cut the same way.

The detector's box for one still face moves by a few percent of its size from sample to sample (re-encoded frames, a
region search against a whole-frame pass), and the model's label moves with the crop (issue 30: labels agree 0.92
with the photo's when the box IoU is >= 0.9, 0.73 below). Per track, the box's centre (in units of the box's size)
and its log width and height are each followed by a time-aware exponential moving average that only moves on
deviations beyond a deadband: detector noise inside it leaves the box exactly as it was, a real move beyond it is
followed at ``1 - exp(-dt / tau)`` of the way per sample (the whole deviation, so the box catches up rather than
lagging by the deadband), and a jump beyond ``snap`` (a new framing) is taken at once. A new track starts at its
raw box. Pure Python: no models, no images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from service.tracking import Box

# the defaults, against the detector noise measured by benchmarks/stability.py (docs/stability.md)
DEADBAND = 0.06  # of the box's size (centre) and in log size: about 3 standard deviations of a still face's noise
TAU = 0.25  # seconds: at 5 samples a second, a deviation beyond the deadband is followed 55% of the way a sample
SNAP = 0.35  # of the box's size (or log size): taken at once


@dataclass
class BoxState:
    """A track's filtered box: centre, log width and height, and the time of its last sample."""

    t: float
    cx: float
    cy: float
    log_w: float
    log_h: float

    @classmethod
    def of(cls, t: float, box: Sequence[float]) -> BoxState:
        x, y, w, h = box
        return cls(t, x + w / 2.0, y + h / 2.0, math.log(max(w, 1)), math.log(max(h, 1)))

    @property
    def box(self) -> Box:
        w, h = math.exp(self.log_w), math.exp(self.log_h)
        return round(self.cx - w / 2.0), round(self.cy - h / 2.0), round(w), round(h)


def follow(deviation: float, deadband: float, alpha: float, snap: float) -> float:
    """How far (in the deviation's units) the filtered value moves towards a raw one ``deviation`` away."""
    size = abs(deviation)
    if size <= deadband:
        return 0.0
    if size >= snap:
        return deviation
    return alpha * deviation


class BoxSmoother:
    """Per track: ``update(track_id, t, box)`` -> the box to crop; ``retain`` drops the tracks that ended."""

    def __init__(self, deadband: float = DEADBAND, tau: float = TAU, snap: float = SNAP) -> None:
        if deadband < 0 or tau < 0 or snap <= deadband:
            raise ValueError(f"need deadband >= 0, tau >= 0 and snap > deadband; got {deadband}, {tau}, {snap}")
        self.deadband, self.tau, self.snap = deadband, tau, snap
        self.states: dict[int, BoxState] = {}

    def alpha(self, dt: float) -> float:
        """The share of a deviation beyond the deadband followed after ``dt`` seconds (1 with ``tau`` 0)."""
        return 1.0 if self.tau <= 0 else 1.0 - math.exp(-max(dt, 0.0) / self.tau)

    def update(self, track_id: int, t: float, box: Sequence[float]) -> Box:
        """The filtered box of ``track_id`` after its raw ``box`` at ``t`` seconds (a new track: the raw box)."""
        raw, state = BoxState.of(t, box), self.states.get(track_id)
        if state is None:
            self.states[track_id] = raw
            return raw.box
        alpha, w, h = self.alpha(t - state.t), math.exp(state.log_w), math.exp(state.log_h)
        state.cx += w * follow((raw.cx - state.cx) / w, self.deadband, alpha, self.snap)
        state.cy += h * follow((raw.cy - state.cy) / h, self.deadband, alpha, self.snap)
        state.log_w += follow(raw.log_w - state.log_w, self.deadband, alpha, self.snap)
        state.log_h += follow(raw.log_h - state.log_h, self.deadband, alpha, self.snap)
        state.t = t
        return state.box

    def retain(self, live: Iterable[int]) -> None:
        """Forget every track not in ``live`` (ended tracks; a track id is never reused)."""
        keep = set(live)
        self.states = {k: s for k, s in self.states.items() if k in keep}


def smooth_boxes(times: Sequence[float], boxes: Sequence[Sequence[float]], **filter_args: float) -> list[Box]:
    """One track's raw boxes at ``times`` -> its filtered boxes (``BoxSmoother``'s arguments)."""
    smoother = BoxSmoother(**filter_args)
    return [smoother.update(0, t, box) for t, box in zip(times, boxes, strict=True)]
