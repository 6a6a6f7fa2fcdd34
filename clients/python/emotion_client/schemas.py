"""The API's response schemas: plain pydantic, importable without the server (no fastapi, numpy or model code).

The server builds its responses from these same classes (``service/schemas.py`` imports them and adds the
converters from pipeline results), so the client's typed results cannot drift from what the server sends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class FaceQuality(BaseModel):
    """How far to trust one face's label: its picture and the model's certainty (``reliable`` sums them up)."""

    face_px: int = Field(description="the face box's shorter side in pixels of the image (a crop: its shorter side)")
    sharpness: float = Field(
        description="variance of the Laplacian of the gray face resized to 64 px (so it does not grow with size); "
        "blurred or enlarged small faces score low, typical sharp faces some hundreds"
    )
    yaw: float | None = Field(
        None, ge=-1, le=1, description="head turn proxy from the landmarks, 0 = frontal; null without landmarks"
    )
    pitch: float | None = Field(
        None, ge=-1, le=1, description="head tilt proxy from the landmarks, 0 = frontal; null without landmarks"
    )
    frontal: float | None = Field(
        None, ge=0, le=1, description="1 - max(|yaw|, |pitch|): 1 = frontal; null without landmarks (face crops)"
    )
    detector_score: float | None = Field(
        None, description="the detector's confidence; 0 for a box no detector confirmed, null for a face crop"
    )
    margin: float = Field(ge=0, le=1, description="top-1 minus top-2 probability (of the face's own answer)")
    entropy: float = Field(ge=0, le=1, description="entropy of the probabilities over log(labels): 0 certain, 1 flat")


class Reliability(BaseModel):
    quality: FaceQuality | None = Field(None, description="the face's picture quality and the answer's certainty")
    reliable: bool | None = Field(
        None,
        description="whether quality passes the service's thresholds (EMOTION_QUALITY__*): large, sharp, "
        "frontal enough and a clear enough answer",
    )


class FacePredictionResponse(Reliability, AffectPrediction):
    model: ModelRef
    valence_arousal_source: VASource


class DetectedFace(Reliability, AffectPrediction):
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
    mirror_tta: bool = Field(
        True, description="each face averaged with its mirror image (where the model's manifest says it pays)"
    )
    mirror_tta_margin: float = Field(
        1.0,
        description="with mirror_tta: only faces whose calibrated top-two margin is under this get their mirror "
        "image (1: every face)",
    )
    gate_margin: float | None = Field(
        None,
        description="an ensemble with a gate: faces whose top-two margin under its gate member is at least this get "
        "that member's answer alone (labels as the whole ensemble's on val); none: every face gets the ensemble",
    )
    int8_weight_bits: int | None = Field(
        None,
        description="backend onnx-int8: the int8 graph's weight bits, 7 on x86 CPUs without VNNI (whose int8 products "
        "saturate with 8), else 8; none for other backends",
    )
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
    status: Literal["ok", "loading", "failed", "saturated"]
    model: ModelRef | None = None
    detail: str | None = None


class TimelinePoint(Reliability, AffectPrediction):
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
    reliable_share: float | None = Field(None, ge=0, le=1, description="share of its samples flagged reliable")
    person_id: int | None = Field(
        None,
        description="the person this track was linked to (see persons); a label within this answer only, never "
        "matched across videos; null with linking off",
    )


class Person(BaseModel):
    """Tracks linked into one person by face descriptor (computed and kept inside the service, never returned).
    ``person_id`` is a label within this answer (1, 2, 3 ... in order of first appearance), meaningless outside it:
    there is no gallery, no enrolment and no matching across videos."""

    person_id: int
    track_ids: list[int] = Field(description="its tracks, by first appearance")
    first_seen: float
    last_seen: float
    time_on_screen: float = Field(description="seconds its face was seen (sampled time covered by its tracks)")
    summary: EmotionSummary = Field(description="over every sample of its tracks")
    segments: list[Segment] = Field(description="runs of one dominant label across the whole clip")


class ClipPrediction(AffectPrediction):
    track_id: int
    start: float
    end: float


class AttributeTimelinePoint(BaseModel):
    t: float = Field(description="seconds from the start of the video")
    frame: int
    attributes: dict[str, float] = Field(description="probability per attribute, smoothed over time")
    present: list[str] = Field(description="attributes at or over their threshold")


class AttributeSegment(BaseModel):
    attribute: str
    start: float
    end: float


class AttributeTimeline(BaseModel):
    """A frame-attributes model over a video: whole frames, no faces."""

    thresholds: dict[str, float]
    timeline: list[AttributeTimelinePoint]
    share: dict[str, float] = Field(description="fraction of the analysed time each attribute was present")
    mean: dict[str, float] = Field(description="mean probability per attribute")
    segments: list[AttributeSegment] = Field(description="runs of presence, by start time")


class UnreadableSpan(BaseModel):
    """A stretch of the video whose frames could not be decoded (damaged): left out of every timeline."""

    start: float = Field(description="seconds")
    end: float = Field(description="seconds (exclusive)")
    frames: int = Field(description="frames lost in it")


class VideoPredictionResponse(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    frames_analyzed: int
    sample_fps: float
    frames_unreadable: int = Field(
        0, description="frames of the analysed span that could not be decoded; read past, left out of the analysis"
    )
    unreadable: list[UnreadableSpan] = Field(default_factory=list, description="where those frames were, in order")
    warnings: list[str] = Field(
        default_factory=list, description="what the analysis could not cover and why (empty when it covers the clip)"
    )
    model: ModelRef
    valence_arousal_source: VASource
    tracks: list[Track]
    persons: list[Person] = Field(
        default_factory=list,
        description="face models: the tracks linked into persons (empty with linking off, EMOTION_VIDEO__LINK_PERSONS)",
    )
    summary: EmotionSummary | None = Field(None, description="whole clip, over every face and sample")
    clips: list[ClipPrediction] = Field(default_factory=list, description="clip models: one prediction per window")
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds spent decoding, detecting, classifying; frames decoded"
    )
    detection: dict[str, int] = Field(
        default_factory=dict,
        description="face models: how detection ran: full_frame_passes, full_frame_passes_put_off (over a picture "
        "unchanged outside the tracked faces), regions_searched (around live tracks), "
        "regions_with_a_face, regions_carried_forward (steady tracks not searched on that sample), shot_cuts (hard "
        "cuts that ended every track), faces_replaced (tracks ended because another face took their place)",
    )
    attributes: AttributeTimeline | None = Field(
        None, description="frame-attributes models: the attribute timeline (tracks and summary are then empty)"
    )


# Frame attributes (``/predict/attributes``), feature vectors (``/predict/features``) and store reloads.


class AttributeModelResult(BaseModel):
    """One frame-attributes model's answer for the image."""

    model: ModelRef
    attributes: dict[str, float] = Field(description="probability per attribute (independent; they need not sum to 1)")
    present: list[str] = Field(description="attributes at or over their threshold, in the model's label order")
    thresholds: dict[str, float] = Field(description="the threshold per attribute, from the model's manifest")


class AttributesPredictionResponse(BaseModel):
    """Every named model's attributes for one image, in the order the models were named (one model: one entry)."""

    width: int
    height: int
    results: list[AttributeModelResult]


class FeaturePredictionRequest(BaseModel):
    """Rows of raw feature values, each as long as the model's ``input.length`` (``GET /models``); the service
    applies the model's own per-feature standardisation."""

    model_config = ConfigDict(extra="forbid")

    features: list[list[float]] = Field(
        description="N rows of input.length numbers each", examples=[[[0.12, -1.3, 4.2], [0.05, -0.9, 3.8]]]
    )


class FeatureRowPrediction(BaseModel):
    probabilities: dict[str, float] = Field(description="calibrated probabilities over the model's labels")
    label: str = Field(description="the most probable label")


class FeaturePredictionResponse(BaseModel):
    model: ModelRef
    predictions: list[FeatureRowPrediction] = Field(description="one per row, in row order")


class ReloadResponse(BaseModel):
    """What a rescan of the model store changed."""

    added: list[ModelRef]
    removed: list[ModelRef] = Field(description="unloaded; requests that were using them finished on them")
    updated: list[ModelRef] = Field(description="manifest changed in place: reloaded on next use")
    invalid: dict[str, str] = Field(description="folders whose manifest could not be read, with the reason")
    versions: int = Field(description="model versions in the store now")


# Video jobs (``/jobs``): the server answers with these models and the client reads them, so the two cannot drift.

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_JOB_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobAccepted(BaseModel):
    """``202`` to ``POST /jobs/video``; poll ``GET /jobs/{id}`` (the ``Location`` header)."""

    id: str
    status: Literal["queued"] = "queued"
    created: datetime


class JobInfo(BaseModel):
    """A video job's status and progress (``GET /jobs`` lists these; ``DELETE /jobs/{id}`` answers one)."""

    id: str
    status: JobStatus
    progress: float = Field(0.0, ge=0, le=1, description="share of the clip analysed")
    created: datetime
    started: datetime | None = Field(None, description="when its latest try started")
    finished: datetime | None = None
    expires: datetime | None = Field(None, description="when the job, its result and files are deleted")
    tries: int = Field(0, description="starts so far; a worker that died mid-job used one")
    model: ModelRef
    error: ErrorDetail | None = Field(
        None, description="why it failed, as the synchronous route would say; when failed"
    )

    @property
    def done(self) -> bool:
        """Whether the job has reached a final status (succeeded, failed or cancelled)."""
        return self.status in FINAL_JOB_STATUSES


class Job(JobInfo):
    """``GET /jobs/{id}``: the job, with the ``/predict/video`` response once it succeeded."""

    result: VideoPredictionResponse | None = Field(None, description="the /predict/video response, once succeeded")


class JobPage(BaseModel):
    """One page of ``GET /jobs``, newest first (the jobs without their results)."""

    jobs: list[JobInfo] = Field(description="newest first")
    total: int = Field(description="jobs known (with this status, when filtered)")
    offset: int
    limit: int
    next_offset: int | None = Field(None, description="offset of the next page; null on the last")
