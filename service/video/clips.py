"""Clip models: each track's samples in windows of the model's ``input.frames``, one prediction per window."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model_store import Predictions
from service.registry import LoadedModel
from service.results import ClipResult
from service.video.timeline import windows


def window_frames(members: Sequence[int], frames: int) -> list[int]:
    """``frames`` sample indices spread evenly over a window's ``members`` (repeats when the window is shorter)."""
    chosen = np.linspace(0, len(members) - 1, frames).round().astype(int)
    return [members[c] for c in chosen]


async def classify_clips(
    model: LoadedModel, faces: np.ndarray, track_ids: list[int], times: list[float]
) -> tuple[Predictions, list[ClipResult]]:
    """Every sample gets its window's prediction; ``faces`` are the model-sized samples, in time order."""
    predictor = model.predictor
    frames = predictor.manifest.input.frames or 1
    per_sample: list[Predictions | None] = [None] * len(faces)
    clips: list[ClipResult] = []
    for track_id in sorted(set(track_ids)):
        idx = [i for i, t in enumerate(track_ids) if t == track_id]
        for lo, hi in windows(len(idx), frames):
            members = idx[lo:hi]
            pred = await model.infer(predictor.prepare_clip(faces[window_frames(members, frames)]))
            for i in members:
                per_sample[i] = pred
            clips.append(ClipResult(track_id, times[members[0]], times[members[-1]], pred[0]))
    parts = [p for p in per_sample if p is not None]
    return predictor.concat(parts), clips
