"""Pure timeline arithmetic: time-aware smoothing, segments of one dominant label, summaries, clip windows.

Each has an incremental form (``Ema``, ``Segments``, ``RunningSummary``) that a live stream updates sample by
sample, keeping only running state; the batch functions the video path calls are loops over the same objects, so
both paths run one code."""

from __future__ import annotations

import math

import numpy as np

from service.results import Segment, Summary


class Ema:
    """Exponential moving average with time constant ``tau`` seconds (0 = off), aware of uneven spacing: the first
    sample passes as is, each next one is mixed in by how long it came after the last."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.t: float | None = None
        self.value: np.ndarray | None = None

    def update(self, t: float, values: np.ndarray) -> np.ndarray:
        """The smoothed value at time ``t`` given this sample's ``values`` (not modified)."""
        if self.value is None or self.t is None or self.tau <= 0:
            self.value = np.array(values, copy=True)
        else:
            alpha = math.exp(-(t - self.t) / self.tau)
            self.value = alpha * self.value + (1 - alpha) * values
        self.t = t
        return self.value


def smooth(times: np.ndarray, values: np.ndarray, tau: float) -> np.ndarray:
    """``Ema`` over every sample of a track: the smoothed rows in order (the input unchanged when off)."""
    if tau <= 0 or len(values) < 2:
        return values
    ema, out = Ema(tau), values.copy()
    for i in range(len(values)):
        out[i] = ema.update(float(times[i]), values[i])
    return out


class Segments:
    """Runs of the same dominant label, grown a sample at a time; each sample covers ``step`` seconds from its
    timestamp (to ``duration`` at most, when known)."""

    def __init__(self) -> None:
        self.runs: list[Segment] = []

    def extend(self, t: float, label: str, step: float, duration: float = 0.0) -> None:
        end = round(min(t + step, duration) if duration else t + step, 3)
        last = self.runs[-1] if self.runs else None
        if last is not None and last.dominant == label and t - last.end <= step + 1e-6:
            last.end = end
        else:
            self.runs.append(Segment(start=t, end=end, dominant=label))


def segments(times: list[float], dominant: list[str], step: float, duration: float) -> list[Segment]:
    """``Segments`` over every sample of a track."""
    runs = Segments()
    for t, label in zip(times, dominant, strict=True):
        runs.extend(t, label, step, duration)
    return runs.runs


class RunningSummary:
    """Sums and counts from which ``summarize``'s numbers come at any time, without keeping the samples."""

    def __init__(self, labels: list[str] | tuple[str, ...]) -> None:
        self.labels = list(labels)
        self.n = 0
        self.total = np.zeros(len(self.labels), np.float64)
        self.wins = np.zeros(len(self.labels), np.int64)
        self.va_total: np.ndarray | None = None

    def add(self, probs: np.ndarray, va: np.ndarray | None = None) -> None:
        """One sample (a row of probabilities, its valence/arousal pair) or several (``N x K`` and ``N x 2``)."""
        probs = np.atleast_2d(probs)
        self.n += len(probs)
        self.total += probs.sum(axis=0, dtype=np.float64)
        self.wins += np.bincount(probs.argmax(axis=1), minlength=len(self.labels))
        if va is not None:
            pairs = np.atleast_2d(va).sum(axis=0, dtype=np.float64)
            self.va_total = pairs if self.va_total is None else self.va_total + pairs

    def summary(self) -> Summary | None:
        """Mean probabilities, the dominant label of the mean, each label's share of samples, mean valence/arousal
        (None before the first sample)."""
        if not self.n:
            return None
        mean, share = self.total / self.n, self.wins / self.n
        va = None if self.va_total is None else self.va_total / self.n
        return Summary(
            emotions={label: float(p) for label, p in zip(self.labels, mean, strict=True)},
            dominant=self.labels[int(mean.argmax())],
            share={label: float(s) for label, s in zip(self.labels, share, strict=True)},
            valence=None if va is None else float(va[0]),
            arousal=None if va is None else float(va[1]),
        )


def summarize(probs: np.ndarray, va: np.ndarray | None, labels: list[str]) -> Summary:
    """Mean probabilities, dominant label of the mean, share of samples per dominant label, mean valence/arousal."""
    running = RunningSummary(labels)
    running.add(probs, va)
    summary = running.summary()
    if summary is None:
        raise ValueError("a summary needs at least one sample")
    return summary


def windows(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` windows of ``size`` over ``n`` samples; a tail shorter than half a window joins the last."""
    bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < size // 2:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds
