"""Response schemas, as families that share their fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from model_store import FacePrediction
from service import results
from service.results import ModelId

VASource = Literal["derived", "predicted", "none"]


class ErrorDetail(BaseModel):
    """Every error answer: a sentence saying what is wrong (a list of field errors for request validation)."""

    detail: str | list[dict[str, Any]]


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


# From pipeline results (unrounded dataclasses) to response bodies: the routes and the offline scorer both use these.


def _affect(p: FacePrediction) -> dict:
    return {
        "emotions": {label: round(v, 6) for label, v in p.emotions.items()},
        "dominant": p.dominant,
        "valence": p.valence,
        "arousal": p.arousal,
    }


def _box(box: tuple[int, int, int, int]) -> Box:
    x, y, w, h = (int(v) for v in box)
    return Box(x=x, y=y, width=w, height=h)


def _model(model: ModelId) -> dict:
    return {"model": ModelRef(name=model.name, version=model.version), "valence_arousal_source": model.valence_arousal}


def _summary(s: results.Summary) -> EmotionSummary:
    return EmotionSummary(
        emotions={k: round(v, 6) for k, v in s.emotions.items()},
        dominant=s.dominant,
        share={k: round(v, 4) for k, v in s.share.items()},
        valence=None if s.valence is None else round(s.valence, 4),
        arousal=None if s.arousal is None else round(s.arousal, 4),
    )


def face_response(result: results.FaceResult) -> FacePredictionResponse:
    return FacePredictionResponse(**_affect(result.prediction), **_model(result.model))


def image_response(result: results.ImageResult) -> ImagePredictionResponse:
    return ImagePredictionResponse(
        width=result.width,
        height=result.height,
        **_model(result.model),
        faces=[
            DetectedFace(**_affect(f.prediction), box=_box(f.detection.box), score=round(f.detection.score, 4))
            for f in result.faces
        ],
    )


def _track(track: results.TrackResult) -> Track:
    return Track(
        track_id=track.track_id,
        first_seen=track.first_seen,
        last_seen=track.last_seen,
        timeline=[
            TimelinePoint(**_affect(s.prediction), t=s.t, frame=s.frame, box=_box(s.box)) for s in track.timeline
        ],
        segments=[Segment(start=s.start, end=s.end, dominant=s.dominant) for s in track.segments],
        summary=_summary(track.summary),
    )


def video_response(result: results.VideoResult) -> VideoPredictionResponse:
    return VideoPredictionResponse(
        duration_s=round(result.duration, 3),
        fps=round(result.fps, 3),
        width=result.width,
        height=result.height,
        frames_analyzed=result.frames_analyzed,
        sample_fps=result.sample_fps,
        **_model(result.model),
        tracks=[_track(t) for t in result.tracks],
        clips=[
            ClipPrediction(**_affect(c.prediction), track_id=c.track_id, start=c.start, end=c.end) for c in result.clips
        ],
        summary=None if result.summary is None else _summary(result.summary),
        timings={**{k: round(v, 4) for k, v in result.timings.items()}, "frames_decoded": result.frames_decoded},
    )
