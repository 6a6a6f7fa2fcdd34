"""Frame-attributes models over a video: per-sample attributes smoothed over time, each attribute's share of the
analysed time and its runs of presence (pure arithmetic over the predictions)."""

from __future__ import annotations

import numpy as np

from model_store import Predictions
from service.results import AttributeSample, AttributeSpan, AttributeTimeline, Sample
from service.video.timeline import segments, smooth


def attribute_timeline(
    preds: Predictions, samples: list[Sample], smoothing: float, step: float, duration: float
) -> AttributeTimeline:
    """``preds`` has one multi-label row per sample (in time order); probabilities are smoothed with the time
    constant ``smoothing`` (0 = off) before the thresholds decide presence; each sample covers ``step`` seconds."""
    labels = list(preds.labels)
    assert preds.thresholds is not None, "attribute timelines need a multi-label model"
    times = np.array([s.t for s in samples], dtype=np.float64)
    smoothed = Predictions(
        preds.labels, preds.logits, smooth(times, preds.probabilities, smoothing), None, preds.thresholds
    )
    timeline = [AttributeSample(s.t, s.frame, smoothed.attributes(i)) for i, s in enumerate(samples)]
    present = smoothed.present if len(samples) else np.zeros((0, len(labels)), bool)
    spans = [
        AttributeSpan(label, seg.start, seg.end)
        for k, label in enumerate(labels)
        for seg in segments(times.tolist(), ["on" if p else "off" for p in present[:, k]], step, duration)
        if seg.dominant == "on"
    ]
    share = present.mean(axis=0) if len(samples) else np.zeros(len(labels))
    mean = smoothed.probabilities.mean(axis=0) if len(samples) else np.zeros(len(labels))
    return AttributeTimeline(
        thresholds={label: float(t) for label, t in zip(labels, preds.thresholds, strict=True)},
        timeline=timeline,
        share={label: float(v) for label, v in zip(labels, share, strict=True)},
        mean={label: float(v) for label, v in zip(labels, mean, strict=True)},
        segments=sorted(spans, key=lambda span: (span.start, span.attribute)),
    )
