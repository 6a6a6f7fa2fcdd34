"""Response schemas and the conversions from pipeline results to them.

The schemas themselves live in ``emotion_client/schemas.py`` (plain pydantic, no server imports), so that the
Python client types its results with the very classes the server answers with; every name stays importable
from here.
"""

from __future__ import annotations

from emotion_client.schemas import (
    AffectPrediction,
    AttributeModelResult,
    AttributeSegment,
    AttributesPredictionResponse,
    AttributeTimeline,
    AttributeTimelinePoint,
    Box,
    ClipPrediction,
    DetectedFace,
    EmotionSummary,
    ErrorDetail,
    FacePredictionResponse,
    FaceQuality,
    FeaturePredictionRequest,
    FeaturePredictionResponse,
    FeatureRowPrediction,
    Health,
    ImagePredictionResponse,
    ModelInfo,
    ModelList,
    ModelRef,
    Person,
    ReloadResponse,
    Segment,
    TimelinePoint,
    Track,
    UnreadableSpan,
    VASource,
    VideoPredictionResponse,
)
from model_store import FacePrediction
from service import results
from service.quality import Quality
from service.results import ModelId
from service.video.decode import describe_gaps

__all__ = [
    "AffectPrediction",
    "AttributeModelResult",
    "AttributeSegment",
    "AttributeTimeline",
    "AttributeTimelinePoint",
    "AttributesPredictionResponse",
    "Box",
    "ClipPrediction",
    "DetectedFace",
    "EmotionSummary",
    "ErrorDetail",
    "FacePredictionResponse",
    "FaceQuality",
    "FeaturePredictionRequest",
    "FeaturePredictionResponse",
    "FeatureRowPrediction",
    "Health",
    "ImagePredictionResponse",
    "ModelInfo",
    "ModelList",
    "ModelRef",
    "Person",
    "ReloadResponse",
    "Segment",
    "TimelinePoint",
    "Track",
    "UnreadableSpan",
    "VASource",
    "VideoPredictionResponse",
    "attributes_response",
    "face_response",
    "features_response",
    "image_response",
    "reload_response",
    "video_response",
]

# From pipeline results (unrounded dataclasses) to response bodies: the routes and the offline scorer both use these.


def affect_fields(p: FacePrediction) -> dict:
    return {
        "emotions": {label: round(v, 6) for label, v in p.emotions.items()},
        "dominant": p.dominant,
        "valence": p.valence,
        "arousal": p.arousal,
    }


def quality_fields(q: Quality | None) -> dict:
    """``quality`` and ``reliable`` of a face (both null when the pipeline judged none)."""
    if q is None:
        return {"quality": None, "reliable": None}
    picture, pose = q.picture, q.picture.pose
    score = picture.detector_score
    quality = FaceQuality(
        face_px=picture.face_px,
        sharpness=round(picture.sharpness, 1),
        yaw=None if pose is None else pose.yaw,
        pitch=None if pose is None else pose.pitch,
        frontal=None if pose is None else pose.frontal,
        detector_score=None if score is None else round(score, 4),
        margin=q.margin,
        entropy=q.entropy,
    )
    return {"quality": quality, "reliable": q.reliable}


def box_schema(box: tuple[int, int, int, int]) -> Box:
    x, y, w, h = (int(v) for v in box)
    return Box(x=x, y=y, width=w, height=h)


def model_fields(model: ModelId) -> dict:
    return {"model": ModelRef(name=model.name, version=model.version), "valence_arousal_source": model.valence_arousal}


def summary_schema(s: results.Summary) -> EmotionSummary:
    return EmotionSummary(
        emotions={k: round(v, 6) for k, v in s.emotions.items()},
        dominant=s.dominant,
        share={k: round(v, 4) for k, v in s.share.items()},
        valence=None if s.valence is None else round(s.valence, 4),
        arousal=None if s.arousal is None else round(s.arousal, 4),
    )


def face_response(result: results.FaceResult) -> FacePredictionResponse:
    return FacePredictionResponse(
        **affect_fields(result.prediction), **quality_fields(result.quality), **model_fields(result.model)
    )


def image_response(result: results.ImageResult) -> ImagePredictionResponse:
    return ImagePredictionResponse(
        width=result.width,
        height=result.height,
        **model_fields(result.model),
        faces=[
            DetectedFace(
                **affect_fields(f.prediction),
                **quality_fields(f.quality),
                box=box_schema(f.detection.box),
                score=round(f.detection.score, 4),
            )
            for f in result.faces
        ],
    )


def segment_schemas(runs: list[results.Segment]) -> list[Segment]:
    """Runs of one dominant label, as every route answers them (tracks, persons, live summaries)."""
    return [Segment(start=s.start, end=s.end, dominant=s.dominant) for s in runs]


def _track(track: results.TrackResult) -> Track:
    return Track(
        track_id=track.track_id,
        first_seen=track.first_seen,
        last_seen=track.last_seen,
        timeline=[
            TimelinePoint(
                **affect_fields(s.prediction), **quality_fields(s.quality), t=s.t, frame=s.frame, box=box_schema(s.box)
            )
            for s in track.timeline
        ],
        segments=segment_schemas(track.segments),
        summary=summary_schema(track.summary),
        reliable_share=None if track.reliable_share is None else round(track.reliable_share, 4),
        person_id=track.person_id,
    )


def _person(person: results.PersonResult, tracks: list[results.TrackResult]) -> Person:
    own = [t for t in tracks if t.person_id == person.person_id]
    return Person(
        person_id=person.person_id,
        track_ids=person.track_ids,
        first_seen=min(t.first_seen for t in own),
        last_seen=max(t.last_seen for t in own),
        time_on_screen=person.time_on_screen,
        summary=summary_schema(person.summary),
        segments=segment_schemas(person.segments),
    )


def unreadable_warning(result: results.VideoResult) -> list[str]:
    """What a caller must know about a clip that was analysed around damaged stretches."""
    if not result.unreadable:
        return []
    return [
        f"{result.frames_unreadable} frames could not be decoded ({describe_gaps(result.unreadable)}) and were read "
        f"past: the timelines and summaries cover the other {result.readable_share:.0%} of the analysed span"
    ]


def video_response(result: results.VideoResult) -> VideoPredictionResponse:
    return VideoPredictionResponse(
        duration_s=round(result.duration, 3),
        fps=round(result.fps, 3),
        width=result.width,
        height=result.height,
        frames_analyzed=result.frames_analyzed,
        sample_fps=result.sample_fps,
        frames_unreadable=result.frames_unreadable,
        unreadable=[UnreadableSpan(start=g.start, end=g.end, frames=g.frames) for g in result.unreadable],
        warnings=unreadable_warning(result),
        **model_fields(result.model),
        tracks=[_track(t) for t in result.tracks],
        persons=[_person(p, result.tracks) for p in result.persons],
        clips=[
            ClipPrediction(**affect_fields(c.prediction), track_id=c.track_id, start=c.start, end=c.end)
            for c in result.clips
        ],
        summary=None if result.summary is None else summary_schema(result.summary),
        timings={**{k: round(v, 4) for k, v in result.timings.items()}, "frames_decoded": result.frames_decoded},
        detection=result.detection,
        attributes=None if result.attributes is None else _attribute_timeline(result.attributes),
    )


def _ref(model: ModelId) -> ModelRef:
    return ModelRef(name=model.name, version=model.version)


def _probabilities(values: dict[str, float]) -> dict[str, float]:
    return {label: round(v, 6) for label, v in values.items()}


def attributes_response(result: results.AttributesResult) -> AttributesPredictionResponse:
    return AttributesPredictionResponse(
        width=result.width,
        height=result.height,
        results=[
            AttributeModelResult(
                model=_ref(r.model),
                attributes=_probabilities(r.prediction.attributes),
                present=r.prediction.present,
                thresholds={k: round(v, 4) for k, v in r.thresholds.items()},
            )
            for r in result.results
        ],
    )


def features_response(result: results.FeatureResult) -> FeaturePredictionResponse:
    return FeaturePredictionResponse(
        model=_ref(result.model),
        predictions=[
            FeatureRowPrediction(probabilities=_probabilities(p.emotions), label=p.dominant) for p in result.predictions
        ],
    )


def _attribute_timeline(t: results.AttributeTimeline) -> AttributeTimeline:
    return AttributeTimeline(
        thresholds={k: round(v, 4) for k, v in t.thresholds.items()},
        timeline=[
            AttributeTimelinePoint(
                t=s.t, frame=s.frame, attributes=_probabilities(s.prediction.attributes), present=s.prediction.present
            )
            for s in t.timeline
        ],
        share={k: round(v, 4) for k, v in t.share.items()},
        mean=_probabilities(t.mean),
        segments=[AttributeSegment(attribute=g.attribute, start=g.start, end=g.end) for g in t.segments],
    )


def reload_response(result: results.ReloadResult) -> ReloadResponse:
    def refs(keys: list[tuple[str, str]]) -> list[ModelRef]:
        return [ModelRef(name=name, version=version) for name, version in keys]

    return ReloadResponse(
        added=refs(result.added),
        removed=refs(result.removed),
        updated=refs(result.updated),
        invalid=result.invalid,
        versions=result.versions,
    )
