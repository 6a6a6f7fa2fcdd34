"""The video pipeline: decode and sample -> detect and track -> crop -> classify -> smooth -> aggregate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model_store import InputSpec, Predictions, crop_face, to_uint8_face
from service.detection import FaceDetector
from service.metrics import Metrics
from service.options import Options
from service.registry import LoadedModel
from service.results import ModelId, Sample, VideoResult
from service.tracking import IouTracker
from service.video.clips import classify_clips
from service.video.decode import FrameSampler, Sampling, VideoInfo
from service.video.regions import FrameDetector
from service.video.tracks import build_tracks

CLASSIFY_CHUNK = 256  # samples per trip through the batcher

Progress = Callable[[float], None]


@dataclass
class Scan:
    """What the scan of a video found: a model-sized face and where it was, per sample."""

    info: VideoInfo
    faces: list[np.ndarray] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    frames_analyzed: int = 0
    detect_seconds: float = 0.0


class VideoPipeline:
    def __init__(self, detector: FaceDetector, metrics: Metrics | None = None) -> None:
        self.detector, self.metrics = detector, metrics

    def scan(self, path: str, spec: InputSpec, opts: Options, progress: Progress | None = None) -> Scan:
        """Decode (in a thread of its own) while this thread detects, tracks and crops each sampled frame."""
        sampling = Sampling(opts.sample_fps, opts.start, opts.end, opts.max_frames, opts.max_duration)
        sampler = FrameSampler(path, sampling)
        finder, tracker, scan = FrameDetector(self.detector, opts), IouTracker(), Scan(sampler.info)
        for t, index, frame in sampler:
            started = time.perf_counter()
            found = finder.detect(frame, scan.frames_analyzed, [track.box for track in tracker.live])
            for det, track_id in zip(found, tracker.update(t, [d.box for d in found]), strict=True):
                scan.faces.append(to_uint8_face(crop_face(frame, det.box, spec), spec))
                scan.samples.append(Sample(round(t, 3), index, det.box, track_id))
            scan.frames_analyzed += 1
            scan.detect_seconds += time.perf_counter() - started
            if progress is not None:
                progress(t)
        return scan

    async def classify(self, model: LoadedModel, faces: np.ndarray) -> Predictions:
        """Every sampled face, in chunks through the model's batcher."""
        predictor, parts = model.predictor, []
        for start in range(0, len(faces), CLASSIFY_CHUNK):
            parts.append(await model.infer(predictor.prepare_faces(faces[start : start + CLASSIFY_CHUNK])))
        return Predictions.concat(parts, predictor.labels, predictor.manifest.valence_arousal != "none")

    async def analyse(
        self, path: str, model: LoadedModel, opts: Options, progress: Progress | None = None
    ) -> VideoResult:
        """A video file -> tracks with smoothed timelines, segments and summaries (clip models add windows)."""
        started, manifest = time.perf_counter(), model.manifest
        scan = await asyncio.to_thread(self.scan, path, manifest.input, opts, progress)
        spec = manifest.input
        faces = np.stack(scan.faces) if scan.faces else np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
        classify_started, clips = time.perf_counter(), []
        if model.predictor.is_clip_model:
            preds, clips = await classify_clips(
                model, faces, [s.track_id for s in scan.samples], [s.t for s in scan.samples]
            )
        else:
            preds = await self.classify(model, faces)
        classify_seconds = time.perf_counter() - classify_started
        info = scan.info
        tracks, summary = build_tracks(
            manifest, preds, scan.samples, opts.smoothing, 1.0 / opts.sample_fps, info.duration
        )
        result = VideoResult(
            model=ModelId.of(manifest),
            duration=info.duration,
            fps=info.fps,
            width=info.width,
            height=info.height,
            sample_fps=opts.sample_fps,
            frames_decoded=info.frames_decoded,
            frames_analyzed=scan.frames_analyzed,
            tracks=tracks,
            clips=clips,
            summary=summary,
            timings={"decode": info.decode_seconds, "detect": scan.detect_seconds, "classify": classify_seconds},
        )
        if self.metrics is not None:
            self.metrics.observe_video(result, time.perf_counter() - started)
        return result
