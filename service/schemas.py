"""Response schemas, as families that share their fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

VASource = Literal["derived", "predicted", "none"]


class ModelRef(BaseModel):
    name: str
    version: str


class Box(BaseModel):
    """Pixels of the original image (after EXIF orientation)."""

    x: int
    y: int
    width: int
    height: int


class AffectPrediction(BaseModel):
    emotions: dict[str, float] = Field(description="calibrated probabilities over the model's labels, summing to 1")
    dominant: str
    valence: float | None = Field(None, ge=-1, le=1)
    arousal: float | None = Field(None, ge=-1, le=1)


class FacePredictionResponse(AffectPrediction):
    model: ModelRef
    valence_arousal_source: VASource


class DetectedFace(AffectPrediction):
    box: Box
    score: float = Field(description="detector confidence in 0..1")


class ImagePredictionResponse(BaseModel):
    width: int
    height: int
    model: ModelRef
    valence_arousal_source: VASource
    faces: list[DetectedFace]


class ModelInfo(BaseModel):
    name: str
    version: str
    default: bool = Field(description="requests that name no model get this version")
    task: str
    architecture: str
    labels: list[str]
    input: dict
    valence_arousal: VASource
    backend: str
    device: str
    state: Literal["available", "loading", "loaded", "failed"]
    error: str | None = None
    size_bytes: int
    metrics: dict
    created: str
    description: str = ""


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "loading", "failed"]
    model: ModelRef | None = None
    detail: str | None = None


class TimelinePoint(AffectPrediction):
    t: float = Field(description="seconds from the start of the video")
    frame: int
    box: Box


class Segment(BaseModel):
    start: float
    end: float
    dominant: str


class EmotionSummary(BaseModel):
    emotions: dict[str, float] = Field(description="mean probabilities")
    dominant: str
    share: dict[str, float] = Field(description="fraction of analysed time each label was dominant")
    valence: float | None = None
    arousal: float | None = None


class Track(BaseModel):
    track_id: int
    first_seen: float
    last_seen: float
    timeline: list[TimelinePoint]
    segments: list[Segment]
    summary: EmotionSummary


class ClipPrediction(AffectPrediction):
    track_id: int
    start: float
    end: float


class VideoPredictionResponse(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    frames_analyzed: int
    sample_fps: float
    model: ModelRef
    valence_arousal_source: VASource
    tracks: list[Track]
    summary: EmotionSummary | None = Field(None, description="whole clip, over every face and sample")
    clips: list[ClipPrediction] = Field(default_factory=list, description="clip models: one prediction per window")
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds spent decoding, detecting, classifying"
    )
