"""From per-sample predictions to per-track timelines: smoothing, segments and summaries, and the whole clip's."""

from __future__ import annotations

import numpy as np

from model_store import Manifest, Predictions
from model_store.predictor import valence_arousal
from service.config import QualitySettings
from service.quality import Quality, Thresholds, assess
from service.results import Sample, Summary, TimelineSample, TrackResult
from service.video.timeline import segments, smooth, summarize


def build_tracks(
    manifest: Manifest,
    preds: Predictions,
    samples: list[Sample],
    smoothing: float,
    step: float,
    duration: float,
    quality: Thresholds | None = None,
) -> tuple[list[TrackResult], Summary | None]:
    """``samples`` say where each prediction row's face was. Tracks with the longest presence come
    first; the whole-clip summary is taken over every smoothed sample of every track (unrounded). Each sample
    with a picture quality is judged by ``quality``'s thresholds on its own, unsmoothed, probabilities."""
    rule = quality or QualitySettings()
    tracks: list[TrackResult] = []
    smoothed: list[Predictions] = []
    for track_id in sorted({s.track_id for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.track_id == track_id]
        times = np.array([samples[i].t for i in idx])
        p = smooth(times, preds.probabilities[idx], smoothing)
        head = preds.valence_arousal[idx] if manifest.valence_arousal == "predicted" else None
        va = valence_arousal(manifest, p, None if head is None else smooth(times, head, smoothing))
        track = Predictions(preds.labels, preds.logits[idx], p, va)
        smoothed.append(track)
        timeline = [
            TimelineSample(samples[i].t, samples[i].frame, samples[i].box, track[j], judged(samples[i], preds, i, rule))
            for j, i in enumerate(idx)
        ]
        tracks.append(
            TrackResult(
                track_id=track_id,
                timeline=timeline,
                segments=segments(times.tolist(), track.dominant, step, duration),
                summary=summarize(p, va, manifest.labels),
            )
        )
    tracks.sort(key=lambda tr: (-len(tr.timeline), tr.first_seen))
    if not smoothed:
        return tracks, None
    every = Predictions.concat(smoothed, manifest.labels, manifest.valence_arousal != "none")
    return tracks, summarize(every.probabilities, every.valence_arousal, manifest.labels)


def judged(sample: Sample, preds: Predictions, row: int, rule: Thresholds) -> Quality | None:
    """A sample's quality from its picture and its own prediction row (None for samples without a picture)."""
    return None if sample.picture is None else assess(sample.picture, preds.probabilities[row], rule)
