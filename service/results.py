"""What the pipelines return: plain dataclasses, turned into HTTP responses by ``service.schemas`` and into files
by the offline scorer. Probabilities here are unrounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from model_store import FacePrediction, Manifest
from service.detection import Detection

Box = tuple[int, int, int, int]


class Sample(NamedTuple):
    """Where one analysed face of a video was: time (s), frame index, box and track."""

    t: float
    frame: int
    box: Box
    track_id: int


@dataclass(frozen=True)
class ModelId:
    name: str
    version: str
    valence_arousal: str  # how valence/arousal were obtained: derived, predicted or none

    @classmethod
    def of(cls, manifest: Manifest) -> ModelId:
        return cls(manifest.name, manifest.version, manifest.valence_arousal)


@dataclass(frozen=True)
class FaceResult:
    """An already-cropped face."""

    model: ModelId
    prediction: FacePrediction


@dataclass(frozen=True)
class DetectedFace:
    detection: Detection
    prediction: FacePrediction


@dataclass(frozen=True)
class ImageResult:
    """Every face found in a photo, largest first; ``image`` is the decoded photo (BGR), for drawing."""

    model: ModelId
    width: int
    height: int
    faces: list[DetectedFace]
    image: np.ndarray = field(repr=False, compare=False)


@dataclass
class Segment:
    """A run of samples with the same dominant label, ``[start, end)`` in seconds."""

    start: float
    end: float
    dominant: str


@dataclass(frozen=True)
class Summary:
    """Mean probabilities, the label dominant on average, and the share of samples each label was dominant in."""

    emotions: dict[str, float]
    dominant: str
    share: dict[str, float]
    valence: float | None
    arousal: float | None


@dataclass(frozen=True)
class TimelineSample:
    t: float
    frame: int
    box: Box
    prediction: FacePrediction  # smoothed over time


@dataclass(frozen=True)
class TrackResult:
    track_id: int
    timeline: list[TimelineSample]
    segments: list[Segment]
    summary: Summary

    @property
    def first_seen(self) -> float:
        return self.timeline[0].t

    @property
    def last_seen(self) -> float:
        return self.timeline[-1].t


@dataclass(frozen=True)
class ClipResult:
    """A clip model's prediction for one window of a track's samples."""

    track_id: int
    start: float
    end: float
    prediction: FacePrediction


@dataclass(frozen=True)
class VideoResult:
    model: ModelId
    duration: float
    fps: float
    width: int
    height: int
    sample_fps: float
    frames_decoded: int
    frames_analyzed: int
    tracks: list[TrackResult]
    clips: list[ClipResult]
    summary: Summary | None  # the whole clip, over every face and sample
    timings: dict[str, float]

    @property
    def faces(self) -> int:
        return sum(len(t.timeline) for t in self.tracks)
