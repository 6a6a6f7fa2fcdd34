"""A live session's analysis (``WS /stream``), without any WebSocket: frames in, one result per analysed frame out.

Each frame runs the video path's per-frame work (``FaceFollower``: shot cuts, detection cadence, tracker, crops) in
one worker-thread hop with its decoding and preprocessing, then goes through the model's micro-batcher (so sessions
batch with each other and with requests), then each face's track smooths, segments and summarises it
(``TrackState``, the incremental form of the video timelines). Only running state is kept: a session's cost per
frame stays flat however long it runs.

Real time, not a queue: a one-slot ``Mailbox`` holds the newest frame not yet analysed, and a newer one replaces it
(the older is dropped and counted).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from emotion_client.stream_messages import (
    StreamCounts,
    StreamError,
    StreamFace,
    StreamOptions,
    StreamReady,
    StreamResult,
    StreamSummary,
    StreamTrack,
)
from model_store import Predictions, Prepared
from service.config import QualitySettings, Settings
from service.errors import InvalidInput, ServiceError, WrongModelKind
from service.imaging import decode_image
from service.metrics import Metrics
from service.options import Options, Requested, resolve_options
from service.pipelines import Pipelines
from service.quality import Thresholds, assess
from service.registry import LoadedModel, ModelRegistry
from service.results import ModelId

# the response converters: one rounding and one quality shape for every route
from service.schemas import (
    AffectPrediction,
    affect_fields,
    box_schema,
    model_fields,
    quality_fields,
    segment_schemas,
    summary_schema,
)
from service.video.follow import FaceFollower, TrackedFace
from service.video.timeline import RunningSummary
from service.video.tracks import TrackState

DEFAULT_STEP_S = 0.2  # what one sample covers in a segment before the session's frame rate is known
RATE_WINDOW = 8  # gaps between analysed frames the frame rate is the median of
ENDED_TRACKS_KEPT = 256  # ended tracks a summary still lists (the oldest go first): a session's memory stays bounded


# A frame's capture time is seconds: since the epoch (1.8e9 now) or since the stream began. One far past that
# (milliseconds sent as seconds, a garbage clock) would become every later frame's time, as times never go back.
MAX_CAPTURE_S = 1e10


def check_time(t: float) -> None:
    """Refuse a capture time that cannot be seconds; the session goes on without that frame."""
    if not (math.isfinite(t) and 0 <= t <= MAX_CAPTURE_S):
        raise InvalidInput(
            f"the frame's capture time {t!r} is not seconds from 0 to {MAX_CAPTURE_S:g} (time.time(), or since the "
            "stream began); the frame was not analysed"
        )


@dataclass(frozen=True)
class Frame:
    """A frame message as received: its number in the session, its bytes, and its time (capture, or arrival)."""

    seq: int
    data: bytes
    t: float


class Mailbox:
    """One slot for the newest frame not yet analysed: ``put`` replaces a frame still waiting (counted in
    ``dropped`` and in the ``skipped`` the next ``get`` reports); ``get`` waits for one, or returns None once
    ``close`` was called and the slot is empty."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self._skipped = 0
        self.dropped = 0
        self.closed = False

    def put(self, frame: Frame) -> bool:
        """Leave ``frame`` for the analyser; True when it replaced a waiting one (dropped)."""
        replaced = self._frame is not None
        if replaced:
            self.dropped += 1
            self._skipped += 1
        self._frame = frame
        self._ready.set()
        return replaced

    async def get(self) -> tuple[Frame, int] | None:
        """The newest frame and how many were dropped since the last ``get``; None when closed and empty."""
        while self._frame is None:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        skipped, self._skipped = self._skipped, 0
        return frame, skipped

    def close(self) -> None:
        """No more frames: ``get`` hands out the one waiting, if any, then None."""
        self.closed = True
        self._ready.set()

    def discard(self) -> int:
        """Drop the waiting frame (the session ends without analysing it); 1 if there was one."""
        waiting = self._frame is not None
        self._frame = None
        self.dropped += waiting
        return int(waiting)


class Cadence:
    """Whole-frame detections every ``period_s`` seconds of stream, as a number of analysed frames at the session's
    frame rate (over the last ``RATE_WINDOW`` gaps between analysed frames' times, rounded to 0.01 fps): frames
    ``1/fps`` apart get the video path's ``round(sample_fps * full_detect_every_s)``."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.last_t: float | None = None
        self.gaps: deque[float] = deque(maxlen=RATE_WINDOW)

    def tick(self, t: float) -> None:
        """An analysed frame at ``t`` seconds."""
        if self.last_t is not None and t > self.last_t:
            self.gaps.append(t - self.last_t)
        self.last_t = t

    @property
    def fps(self) -> float | None:
        return round(len(self.gaps) / sum(self.gaps), 2) if self.gaps else None

    @property
    def every(self) -> int:
        fps = self.fps
        return 1 if fps is None else max(1, round(fps * self.period_s))

    @property
    def step(self) -> float:
        """What one sample covers in a segment: one frame interval."""
        fps = self.fps
        return DEFAULT_STEP_S if not fps else 1.0 / fps


@dataclass(frozen=True)
class Followed:
    """A frame after its worker-thread hop: its size and time, and its faces, cut and prepared for the model."""

    width: int
    height: int
    t: float
    faces: list[TrackedFace]
    prepared: Prepared | None  # None without faces


class NotAFaceModel(WrongModelKind):
    """Live streams follow faces: clip and frame models cannot serve one."""


class StreamSession:
    """One live session: its model and options, the faces it follows, their tracks' running state, its counts."""

    def __init__(
        self,
        session_id: str,
        model: LoadedModel,
        pipelines: Pipelines,
        opts: Options,
        period_s: float,
        settings: Settings,
        metrics: Metrics | None = None,
    ) -> None:
        self.id, self.model, self.metrics, self.smoothing = session_id, model, metrics, opts.smoothing
        video = pipelines.video
        spec = model.predictor.image_spec
        self.follower = FaceFollower(pipelines.detector, video.cropper, spec, opts, keep_finished=False)
        self.cadence = Cadence(period_s)
        self.rule: Thresholds = video.quality or QualitySettings()
        self.max_pixels = settings.limits.max_image_pixels
        self.live: dict[int, TrackState] = {}
        self.ended: OrderedDict[int, TrackState] = OrderedDict()
        self.overall = RunningSummary(model.manifest.labels)
        self.counts = StreamCounts(received=0, analysed=0, dropped=0, bad=0)  # kept as the summaries send it
        self.started = time.monotonic()
        self.last_t: float | None = None

    def clock(self) -> float:
        """Seconds since the session began: the time of a frame that carries none."""
        return time.monotonic() - self.started

    def ready(self, max_frame_bytes: int, idle_timeout_s: float) -> StreamReady:
        manifest = self.model.manifest
        return StreamReady(
            session=self.id,
            **model_fields(ModelId.of(manifest)),
            labels=list(manifest.labels),
            max_frame_bytes=max_frame_bytes,
            idle_timeout_s=idle_timeout_s,
        )

    def received(self) -> None:
        self.counts.received += 1
        self._observe("received")

    def dropped(self, n: int = 1) -> None:
        for _ in range(n):
            self.counts.dropped += 1
            self._observe("dropped")

    def _observe(self, outcome: str, seconds: float | None = None, faces: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.observe_stream_frame(outcome, seconds, faces)

    async def analyse(self, frame: Frame, skipped: int) -> StreamResult | StreamError:
        """The frame's faces (``skipped``: frames dropped since the last result), or an error for a frame that
        cannot be read (the session goes on; its tracks never saw it)."""
        started = time.perf_counter()
        try:
            followed = await asyncio.to_thread(self._follow, frame)
        except ServiceError as exc:
            self.counts.bad += 1
            self._observe("bad")
            return StreamError(seq=frame.seq, detail=exc.detail)
        preds = await self.model.infer(followed.prepared) if followed.prepared is not None else None
        faces = [] if preds is None else self._faces(followed, preds)
        self._retire()
        seconds = time.perf_counter() - started
        self.counts.analysed += 1
        self._observe("analysed", seconds, len(faces))
        return StreamResult(
            seq=frame.seq,
            t=followed.t,
            skipped=skipped,
            width=followed.width,
            height=followed.height,
            faces=faces,
            server_ms=round(seconds * 1000, 2),
        )

    def _follow(self, frame: Frame) -> Followed:
        """Decode, follow the faces, cut and prepare them (one worker-thread hop); a frame's time never goes back."""
        check_time(frame.t)
        image = decode_image(frame.data, self.max_pixels)
        t = round(frame.t, 3) if self.last_t is None else max(round(frame.t, 3), self.last_t)
        self.last_t = t
        self.cadence.tick(frame.t)  # unrounded: milliseconds would make 30 fps read as 30.3
        faces = self.follower.follow(image, t, self.cadence.every)
        prepared = self.model.predictor.prepare_faces(np.stack([f.face for f in faces])) if faces else None
        return Followed(image.shape[1], image.shape[0], t, faces, prepared)

    def _faces(self, followed: Followed, preds: Predictions) -> list[StreamFace]:
        """Each face with its track's smoothed answer, its own (raw) answer and its quality."""
        manifest, step, out = self.model.manifest, self.cadence.step, []
        for i, face in enumerate(followed.faces):
            track = self.live.get(face.track_id)
            if track is None:
                track = self.live[face.track_id] = TrackState(face.track_id, manifest, self.smoothing, followed.t)
            head = None if preds.valence_arousal is None else preds.valence_arousal[i]
            p, va = track.add(followed.t, preds.probabilities[i], head, step)
            self.overall.add(p, va)
            smoothed = Predictions(preds.labels, preds.logits[i : i + 1], p[None], None if va is None else va[None])
            out.append(
                StreamFace(
                    **affect_fields(smoothed[0]),
                    track_id=face.track_id,
                    box=box_schema(face.detection.box),
                    score=round(face.detection.score, 4),
                    raw=AffectPrediction(**affect_fields(preds[i])),
                    **quality_fields(assess(face.picture, preds.probabilities[i], self.rule)),
                )
            )
        return out

    def _retire(self) -> None:
        """Tracks the tracker ended move to ``ended``; past ``ENDED_TRACKS_KEPT`` the oldest are forgotten."""
        following = {tr.track_id for tr in self.follower.tracker.live}
        for track_id in [i for i in self.live if i not in following]:
            self.ended[track_id] = self.live.pop(track_id)
        while len(self.ended) > ENDED_TRACKS_KEPT:
            self.ended.popitem(last=False)

    def summary(self, final: bool = False) -> StreamSummary:
        """Every track kept (live and ended, by id) with its segments and summary, the frame counts, and the
        summary over every analysed face."""
        tracks = sorted([*self.ended.values(), *self.live.values()], key=lambda tr: tr.track_id)
        overall = self.overall.summary()
        return StreamSummary(
            final=final,
            tracks=[track_message(tr) for tr in tracks if tr.samples],
            frames=self.counts.model_copy(),
            summary=None if overall is None else summary_schema(overall),
        )


def track_message(track: TrackState) -> StreamTrack:
    summary = track.summary.summary()
    assert summary is not None  # a track exists from its first sample on
    return StreamTrack(
        track_id=track.track_id,
        first_seen=track.first_seen,
        last_seen=track.last_seen,
        samples=track.samples,
        segments=segment_schemas(track.segments.runs),
        summary=summary_schema(summary),
    )


async def open_session(
    options: StreamOptions,
    registry: ModelRegistry,
    pipelines: Pipelines,
    settings: Settings,
    metrics: Metrics | None = None,
) -> StreamSession:
    """A session for ``options`` (the service's defaults where they say nothing): its model loaded, which must be a
    face model (``NotAFaceModel``; an unknown model raises ``ModelNotFound``)."""
    stream = settings.stream
    smoothing = stream.smoothing if options.smoothing is None else options.smoothing
    requested = Requested(max_faces=options.max_faces, min_face_size=options.min_face_size, smoothing=smoothing)
    opts = resolve_options(settings, requested)
    model = await registry.get(options.model or None, options.version or None)
    if model.input_kind != "face" or model.predictor.is_clip_model:
        raise NotAFaceModel(
            f"model {model.manifest.name!r} takes {model.input_kind} input; a live stream needs a face model"
        )
    period = stream.full_detect_every_s if options.full_detect_every_s is None else options.full_detect_every_s
    return StreamSession(secrets.token_hex(6), model, pipelines, opts, period, settings, metrics)
