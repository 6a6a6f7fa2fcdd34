"""The video pipeline: decode and sample -> a step per sampled frame -> classify -> smooth -> aggregate.

The step is what the model needs from a frame: the face step detects and tracks faces and crops each (face and clip
models); the frame step takes the whole frame (frame-attributes models: no detection). Everything around it,
decoding, sampling, limits, progress, timings, metrics, is one path for both.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from model_store import InputSpec, Predictions, to_uint8_face
from service.detection import FaceDetector
from service.detection.align import FaceCropper
from service.identity import TrackChips
from service.metrics import Metrics
from service.options import Options
from service.persons import PersonLinking
from service.pipelines.face import Cropper
from service.quality import Thresholds
from service.registry import LoadedModel
from service.results import ModelId, Sample, VideoResult
from service.video.attributes import attribute_timeline
from service.video.clips import classify_clips
from service.video.decode import FrameSampler, Sampling, VideoInfo
from service.video.follow import FaceFollower
from service.video.tracks import build_tracks

CLASSIFY_CHUNK = 256  # samples per trip through the batcher
STREAM_CHUNK = 32  # face models: faces sent to the model during the scan at a time (small, so the work overlaps)
STREAM_IN_FLIGHT = 4  # chunks queued at the model at most: the scan waits rather than crowd out other requests
STREAM_BYTES = 16 << 20  # a chunk goes early at this many bytes of crops (4K close-ups), so those queued stay small

Progress = Callable[[float], None]


@dataclass
class Scan:
    """What the scan of a video found: a face (or frame) and where it was, per sample. Face models and frame steps
    classify as they go (``pending``, ``parts``) and keep only the faces not yet sent (face models' as cut, resized
    in the model's worker): a long video's would not fit in memory. Clip models need every face, model-sized (their
    windows), and keep them all."""

    info: VideoInfo
    faces: list[np.ndarray] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    parts: list[Predictions] = field(default_factory=list)
    frames_analyzed: int = 0
    detect_seconds: float = 0.0
    classify_seconds: float = 0.0
    detection_counts: dict[str, int] = field(default_factory=dict)  # the face step's cadence (FrameDetector.counts)
    pending: list[Future] = field(default_factory=list)  # face chunks already sent to the model during the scan
    submitted: int = 0  # faces in those chunks
    people: TrackChips | None = None  # each track's best faces, for linking tracks into persons (linking on)


Submit = Callable[[list[np.ndarray]], Future]  # face crops -> their Predictions, computed on the event loop


class FaceStep:
    """Follow the faces of each sampled frame (``FaceFollower``: shot cuts, detection cadence, tracker, crops cut as
    the model expects) and collect them into the scan, one ``Sample`` each.

    With ``submit`` (face models), faces go to the model as cut, every ``STREAM_CHUNK`` of them, while the scan goes
    on: resizing them to the model's input, and classifying, overlap decoding and detection (the resize was a sixth
    of the default's scan). Clip models need every face first, model-sized, and classify after the scan.
    """

    def __init__(
        self,
        detector: FaceDetector,
        cropper: Cropper,
        spec: InputSpec,
        opts: Options,
        submit: Submit | None = None,
        people: TrackChips | None = None,
    ) -> None:
        self.follower = FaceFollower(detector, cropper, spec, opts, resize=submit is None)  # crops go as cut
        self.submit, self.people = submit, people

    def __call__(self, scan: Scan, t: float, index: int, frame: np.ndarray) -> None:
        for face in self.follower.follow(frame, t):
            det, picture = face.detection, face.picture
            scan.faces.append(face.face)
            scan.samples.append(Sample(round(t, 3), index, det.box, face.track_id, picture))
            if self.people is not None:
                self.people.offer(face.track_id, round(t, 3), index, frame, det, picture.sharpness)
        self._send(scan, whole_chunks_only=True)

    def _send(self, scan: Scan, whole_chunks_only: bool) -> None:
        """Faces not yet sent go to the model in chunks of at most ``STREAM_CHUNK`` faces (fewer past
        ``STREAM_BYTES``) and leave the scan: their answers come back through ``scan.pending`` (kept, the default's
        faces took 1.2 GB per face and hour of video). With ``STREAM_IN_FLIGHT`` chunks still queued, this (the
        scan's) thread waits for the oldest."""
        while self.submit is not None and scan.faces and (self._full(scan.faces) or not whole_chunks_only):
            waiting = [f for f in scan.pending if not f.done()]
            if len(waiting) >= STREAM_IN_FLIGHT:
                waiting[0].exception()  # blocks until it is done; its outcome is read after the scan
            n = min(STREAM_CHUNK, len(scan.faces))
            scan.pending.append(self.submit(scan.faces[:n]))
            del scan.faces[:n]
            scan.submitted += n

    @staticmethod
    def _full(faces: list[np.ndarray]) -> bool:
        return len(faces) >= STREAM_CHUNK or sum(f.nbytes for f in faces) >= STREAM_BYTES

    def finish(self, scan: Scan) -> None:
        """The last faces go to the model (with ``submit``); the cadence's counts and the cuts go into the scan."""
        self._send(scan, whole_chunks_only=False)
        scan.detection_counts = self.follower.counts
        scan.people = self.people


class FrameStep:
    """The whole frame is the input: resized to the model's size, classified in chunks of ``CLASSIFY_CHUNK``
    through ``classify`` (called from the scan's thread)."""

    def __init__(self, spec: InputSpec, classify: Callable[[np.ndarray], Predictions]) -> None:
        self.spec, self.classify = spec, classify

    def __call__(self, scan: Scan, t: float, index: int, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        scan.faces.append(to_uint8_face(frame, self.spec))
        scan.samples.append(Sample(round(t, 3), index, (0, 0, width, height), 0))
        if len(scan.faces) >= CLASSIFY_CHUNK:
            self.finish(scan)

    def finish(self, scan: Scan) -> None:
        if scan.faces:
            started = time.perf_counter()
            scan.parts.append(self.classify(np.stack(scan.faces)))
            scan.faces.clear()
            scan.classify_seconds += time.perf_counter() - started


Step = FaceStep | FrameStep


class VideoPipeline:
    def __init__(
        self,
        detector: FaceDetector,
        metrics: Metrics | None = None,
        cropper: Cropper | None = None,
        quality: Thresholds | None = None,
        persons: PersonLinking | None = None,
        max_scans: int = 0,
    ) -> None:
        """``max_scans``: videos scanned at once, on threads of their own (0: half the cores, at least 2). They
        used the event loop's default executor, where six long scans held every thread that photos, face crops and
        live streams hop to: a stream's frame waited 25 s behind seven uploads."""
        self.detector, self.metrics = detector, metrics
        self.cropper = cropper or FaceCropper()
        self.quality = quality  # the reliable rule's thresholds (None: build_tracks' default)
        self.persons = persons  # None: tracks are not linked into persons
        scans = max_scans or max(2, (os.cpu_count() or 2) // 2)
        self.executor = ThreadPoolExecutor(scans, thread_name_prefix="video-scan")

    def close(self) -> None:
        """Scans waiting for a thread are dropped; running ones finish in their threads."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def scan(self, path: str, step: Step, opts: Options, progress: Progress | None = None) -> Scan:
        """Decode (in a thread of its own) while this thread runs ``step`` on each sampled frame."""
        sampling = Sampling(
            opts.sample_fps, opts.start, opts.end, opts.max_frames, opts.max_duration, opts.min_readable_share
        )
        sampler = FrameSampler(path, sampling)
        scan = Scan(sampler.info)
        try:
            for t, index, frame in sampler:
                started, classified = time.perf_counter(), scan.classify_seconds
                step(scan, t, index, frame)
                scan.frames_analyzed += 1  # a frame step's classification is timed apart from its per-frame work
                scan.detect_seconds += time.perf_counter() - started - (scan.classify_seconds - classified)
                if progress is not None:
                    progress(t)
            step.finish(scan)
        except BaseException:  # a cancelled job, an unreadable video: chunks still queued at the model are dropped
            for future in scan.pending:
                future.cancel()
            raise
        return scan

    def step_for(self, model: LoadedModel, opts: Options) -> Step:
        """The per-frame step the model needs (its input kind)."""
        spec, loop = model.predictor.image_spec, asyncio.get_running_loop()
        if model.input_kind != "frame":
            people = None if self.persons is None else self.persons.collector()
            if model.predictor.is_clip_model:
                return FaceStep(self.detector, self.cropper, spec, opts, people=people)

            def submit(crops: list[np.ndarray]) -> Future:  # from the scan's thread: resized in the model's worker
                return asyncio.run_coroutine_threadsafe(model.infer_crops(crops), loop)

            return FaceStep(self.detector, self.cropper, spec, opts, submit, people)

        def classify(frames: np.ndarray) -> Predictions:  # in the scan's thread: prepare here, batch on the loop
            prepared = model.predictor.prepare_faces(frames)
            return asyncio.run_coroutine_threadsafe(model.infer(prepared), loop).result()

        return FrameStep(spec, classify)

    async def classify(self, model: LoadedModel, faces: np.ndarray) -> Predictions:
        """Every sampled face, in chunks through the model's batcher."""
        predictor, parts = model.predictor, []
        for start in range(0, len(faces), CLASSIFY_CHUNK):
            parts.append(await model.infer(predictor.prepare_faces(faces[start : start + CLASSIFY_CHUNK])))
        return predictor.concat(parts)

    async def predict(self, model: LoadedModel, scan: Scan, opts: Options) -> tuple[Predictions, dict]:
        """The scan's predictions and what they make: tracks and a summary (face models), windows (clip models) or
        an attribute timeline (frame models), as ``VideoResult`` fields."""
        manifest, step, duration = model.manifest, 1.0 / opts.sample_fps, scan.info.duration
        if model.input_kind == "frame":
            preds = model.predictor.concat(scan.parts)
            return preds, {"attributes": attribute_timeline(preds, scan.samples, opts.smoothing, step, duration)}
        spec, clips = manifest.input, []
        if scan.pending:  # face models: classified during the scan, their faces need no second copy
            preds = model.predictor.concat(await asyncio.gather(*map(asyncio.wrap_future, scan.pending)))
        else:
            empty = np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
            faces = np.stack(scan.faces) if scan.faces else empty
            if model.predictor.is_clip_model:
                track_ids, times = [s.track_id for s in scan.samples], [s.t for s in scan.samples]
                preds, clips = await classify_clips(model, faces, track_ids, times)
            else:
                preds = await self.classify(model, faces)
        tracks, summary = build_tracks(manifest, preds, scan.samples, opts.smoothing, step, duration, self.quality)
        made = {"tracks": tracks, "summary": summary, "clips": clips}
        if scan.people is not None and self.persons is not None:
            started = time.perf_counter()
            # not behind other videos' scans on the video threads: a finished scan's answer would wait for them
            linked = await asyncio.to_thread(self.persons.apply, scan.people, tracks, manifest.labels, step, duration)
            made["tracks"], made["persons"] = linked
            made["persons_seconds"] = time.perf_counter() - started
        return preds, made

    async def analyse(
        self, path: str, model: LoadedModel, opts: Options, progress: Progress | None = None
    ) -> VideoResult:
        """A video file -> tracks with smoothed timelines, segments and summaries (clip models add windows), or for
        frame-attributes models an attribute timeline over the sampled frames."""
        model.require("face", "clip", "frame")
        started, manifest = time.perf_counter(), model.manifest
        step, loop = self.step_for(model, opts), asyncio.get_running_loop()
        scan = await loop.run_in_executor(self.executor, self.scan, path, step, opts, progress)
        classify_started = time.perf_counter()
        preds, made = await self.predict(model, scan, opts)
        linking = made.get("persons_seconds", 0.0)
        classify_seconds = scan.classify_seconds + time.perf_counter() - classify_started - linking
        info = scan.info
        result = VideoResult(
            model=ModelId.of(manifest),
            duration=info.duration,
            fps=info.fps,
            width=info.width,
            height=info.height,
            sample_fps=opts.sample_fps,
            frames_decoded=info.frames_decoded,
            frames_analyzed=scan.frames_analyzed,
            tracks=made.get("tracks", []),
            clips=made.get("clips", []),
            summary=made.get("summary"),
            timings={
                "decode": info.decode_seconds,
                "detect": scan.detect_seconds,
                "classify": classify_seconds,
                **({"persons": made["persons_seconds"]} if "persons_seconds" in made else {}),
            },
            detection=scan.detection_counts,
            attributes=made.get("attributes"),
            unreadable=info.gaps,
            readable_share=info.readable_share,
            persons=made.get("persons", []),
        )
        if self.metrics is not None:
            self.metrics.observe_video(result, time.perf_counter() - started)
            if preds.thresholds is not None:
                self.metrics.observe_attributes(manifest.key, manifest.labels, preds.present)
        return result
