"""What the pipelines return: plain dataclasses, turned into HTTP responses by ``service.schemas`` and into files
by the offline scorer. Probabilities here are unrounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from model_store import AttributePrediction, FacePrediction, Manifest
from service.detection import Detection
from service.quality import PictureQuality, Quality
from service.video.decode import Gap

Box = tuple[int, int, int, int]


class Sample(NamedTuple):
    """Where one analysed face of a video was: time (s), frame index, box and track, and its picture's quality
    (face steps; None for whole frames)."""

    t: float
    frame: int
    box: Box
    track_id: int
    picture: PictureQuality | None = None


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
    quality: Quality | None = None


@dataclass(frozen=True)
class DetectedFace:
    detection: Detection
    prediction: FacePrediction
    quality: Quality | None = None


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
    quality: Quality | None = None  # its margin and entropy from the sample's own (unsmoothed) probabilities


@dataclass(frozen=True)
class TrackResult:
    track_id: int
    timeline: list[TimelineSample]
    segments: list[Segment]
    summary: Summary
    person_id: int | None = None  # the person (``service.persons``) it was linked to; None with linking off

    @property
    def reliable_share(self) -> float | None:
        """The share of its samples flagged reliable (None when samples carry no quality)."""
        flags = [s.quality.reliable for s in self.timeline if s.quality is not None]
        return sum(flags) / len(flags) if flags else None

    @property
    def first_seen(self) -> float:
        return self.timeline[0].t

    @property
    def last_seen(self) -> float:
        return self.timeline[-1].t


@dataclass(frozen=True)
class PersonResult:
    """Tracks linked into one person (a label within one answer, 1..n in order of first appearance): its tracks,
    seconds on screen, summary and segments over the whole clip."""

    person_id: int
    track_ids: list[int]
    time_on_screen: float
    summary: Summary
    segments: list[Segment]


@dataclass(frozen=True)
class ClipResult:
    """A clip model's prediction for one window of a track's samples."""

    track_id: int
    start: float
    end: float
    prediction: FacePrediction


@dataclass(frozen=True)
class AttributeSet:
    """One attribute model's answer for one image: a probability per attribute, those present, the thresholds."""

    model: ModelId
    prediction: AttributePrediction
    thresholds: dict[str, float]


@dataclass(frozen=True)
class AttributesResult:
    """A whole image scored by one or several frame-attribute models (a suite), in the order they were named."""

    width: int
    height: int
    results: list[AttributeSet]


@dataclass(frozen=True)
class FeatureResult:
    """One prediction per feature row, in row order."""

    model: ModelId
    predictions: list[FacePrediction]


@dataclass(frozen=True)
class AttributeSample:
    t: float
    frame: int
    prediction: AttributePrediction  # smoothed over time


@dataclass(frozen=True)
class AttributeSpan:
    """A run of samples in which ``attribute`` was present, ``[start, end)`` in seconds."""

    attribute: str
    start: float
    end: float


@dataclass(frozen=True)
class AttributeTimeline:
    """A frame-attributes model over a video: every sampled frame, each attribute's share of the analysed time (the
    share of samples it was present in), its mean probability, and its runs of presence."""

    thresholds: dict[str, float]
    timeline: list[AttributeSample]
    share: dict[str, float]
    mean: dict[str, float]
    segments: list[AttributeSpan]


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
    attributes: AttributeTimeline | None = None  # frame-attributes models: whole frames, no faces or tracks
    unreadable: list[Gap] = field(default_factory=list)  # runs of frames that did not decode, read past
    readable_share: float = 1.0  # of the analysed span
    detection: dict[str, int] = field(default_factory=dict)  # face models: the cadence's counts
    persons: list[PersonResult] = field(default_factory=list)  # face models with linking on: tracks by person

    @property
    def faces(self) -> int:
        return sum(len(t.timeline) for t in self.tracks)

    @property
    def frames_unreadable(self) -> int:
        return sum(g.frames for g in self.unreadable)


@dataclass(frozen=True)
class ReloadResult:
    """What a rescan of the store changed: ``name:version`` keys, and folders whose manifest is invalid."""

    added: list[tuple[str, str]]
    removed: list[tuple[str, str]]
    updated: list[tuple[str, str]]
    invalid: dict[str, str]
    versions: int
