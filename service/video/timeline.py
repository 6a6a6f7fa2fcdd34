"""Pure timeline arithmetic: time-aware smoothing, segments of one dominant label, summaries, clip windows."""

from __future__ import annotations

import math

import numpy as np

from service.results import Segment, Summary


def smooth(times: np.ndarray, values: np.ndarray, tau: float) -> np.ndarray:
    """Exponential moving average with time constant ``tau`` seconds (0 = off), aware of uneven spacing."""
    if tau <= 0 or len(values) < 2:
        return values
    out = values.copy()
    for i in range(1, len(values)):
        alpha = math.exp(-(times[i] - times[i - 1]) / tau)
        out[i] = alpha * out[i - 1] + (1 - alpha) * values[i]
    return out


def segments(times: list[float], dominant: list[str], step: float, duration: float) -> list[Segment]:
    """Runs of the same dominant label; each sample covers ``step`` seconds from its timestamp (to the end at most)."""
    out: list[Segment] = []
    for t, label in zip(times, dominant, strict=True):
        end = round(min(t + step, duration) if duration else t + step, 3)
        if out and out[-1].dominant == label and t - out[-1].end <= step + 1e-6:
            out[-1].end = end
        else:
            out.append(Segment(start=t, end=end, dominant=label))
    return out


def summarize(probs: np.ndarray, va: np.ndarray | None, labels: list[str]) -> Summary:
    """Mean probabilities, dominant label of the mean, share of samples per dominant label, mean valence/arousal."""
    mean = probs.mean(axis=0)
    share = np.bincount(probs.argmax(axis=1), minlength=len(labels)) / len(probs)
    return Summary(
        emotions={label: float(p) for label, p in zip(labels, mean, strict=True)},
        dominant=labels[int(mean.argmax())],
        share={label: float(s) for label, s in zip(labels, share, strict=True)},
        valence=None if va is None else float(va[:, 0].mean()),
        arousal=None if va is None else float(va[:, 1].mean()),
    )


def windows(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` windows of ``size`` over ``n`` samples; a tail shorter than half a window joins the last."""
    bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < size // 2:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds
