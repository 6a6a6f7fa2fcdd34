"""From per-sample predictions to per-track timelines: smoothing, segments and summaries, and the whole clip's.

``build_tracks`` does a whole video at once; ``TrackState`` does the same for one track a sample at a time (a live
stream), keeping only running state: both smooth, segment and summarise with ``service.video.timeline``'s objects."""

from __future__ import annotations

import numpy as np

from model_store import Manifest, Predictions
from model_store.predictor import valence_arousal
from service.config import QualitySettings
from service.quality import Quality, Thresholds, assess
from service.results import Sample, Summary, TimelineSample, TrackResult
from service.video.timeline import Ema, RunningSummary, Segments, segments, smooth, summarize


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


class TrackState:
    """One track followed live: ``build_tracks``' smoothing (probabilities and, for a model with its own head,
    valence/arousal), segments and summary, a sample at a time."""

    def __init__(self, track_id: int, manifest: Manifest, smoothing: float, t: float) -> None:
        self.track_id, self.manifest = track_id, manifest
        self.probs, self.head = Ema(smoothing), Ema(smoothing)
        self.segments, self.summary = Segments(), RunningSummary(manifest.labels)
        self.first_seen = self.last_seen = t
        self.samples = 0

    def add(
        self, t: float, probs: np.ndarray, head: np.ndarray | None, step: float
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """This sample's smoothed probabilities and valence/arousal (None where the model has none), from its own
        row of probabilities and, where the model predicts them, its own valence/arousal (``head``)."""
        p = self.probs.update(t, probs)
        smoothed_head = (
            None if head is None or self.manifest.valence_arousal != "predicted" else self.head.update(t, head)
        )
        va = valence_arousal(self.manifest, p[None], None if smoothed_head is None else smoothed_head[None])
        self.segments.extend(t, self.manifest.labels[int(p.argmax())], step)
        self.summary.add(p, va)
        self.last_seen, self.samples = t, self.samples + 1
        return p, None if va is None else va[0]
