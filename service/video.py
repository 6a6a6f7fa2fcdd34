"""Video pipeline: decode, sample by timestamp, detect, track, classify in batches, smooth, summarise."""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from model_store import (
    InputSpec,
    crop_face,
    derive_valence_arousal,
    expand_box,
    normalize,
    to_uint8_face,
)
from service.detection import HOG_WINDOW, Detection, FaceDetector, whole_image_if_small
from service.inference import affect, classify_faces, postprocess
from service.registry import LoadedModel
from service.schemas import (
    Box,
    ClipPrediction,
    EmotionSummary,
    Segment,
    TimelinePoint,
    Track,
    VideoPredictionResponse,
)
from service.tracking import IouTracker, iou

if TYPE_CHECKING:
    from service.config import Settings

CLASSIFY_CHUNK = 256


class VideoError(ValueError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def sniff_video(head: bytes) -> str | None:
    """Container from the first bytes: mp4/mov, avi, webm/mkv; None when unknown."""
    if head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


@dataclass
class VideoOptions:
    sample_fps: float = 5.0
    max_frames: int = 3000
    start: float = 0.0
    end: float | None = None
    smoothing: float = 0.25
    min_face_size: int | None = None  # also how small a face full-frame detection searches for
    max_faces: int = 20
    max_duration: float = 600.0
    whole_image_fallback_max_side: int = 256
    full_detect_every: int = 5  # samples; in between, only regions around live tracks are searched
    detect_max_side: int = 640  # full-frame passes scan larger frames at this longest side
    progress: Callable[[float], None] | None = None  # called with each analysed sample's time (seconds)

    @classmethod
    def from_settings(cls, settings: Settings, sample_fps: float = 5.0, **kwargs) -> VideoOptions:
        """Options whose detection cadence, detection scale and crop fallback come from the service settings."""
        return cls(
            sample_fps=sample_fps,
            full_detect_every=max(1, round(sample_fps * settings.video_full_detect_every_s)),
            whole_image_fallback_max_side=settings.whole_image_fallback_max_side,
            detect_max_side=settings.video_detector_max_side,
            **kwargs,
        )


@dataclass
class FaceSample:
    t: float
    frame: int
    box: tuple[int, int, int, int]
    face: np.ndarray
    track_id: int = 0


@dataclass
class VideoScan:
    fps: float
    width: int
    height: int
    duration: float
    frames_decoded: int = 0
    frames_analyzed: int = 0
    last_index: int = -1
    faces: list[FaceSample] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "detect": 0.0, "classify": 0.0})


def _open(path: str, opts: VideoOptions) -> tuple[cv2.VideoCapture, VideoScan]:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise VideoError(422, "the video could not be opened: unsupported codec or corrupt file")
    fps = cap.get(cv2.CAP_PROP_FPS)
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
    duration = count / fps if fps and count > 0 else 0.0
    if duration > opts.max_duration:
        cap.release()
        raise VideoError(413, f"video lasts {duration:.1f}s; the limit is {opts.max_duration:.0f}s")
    return cap, VideoScan(
        fps, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), duration
    )


def _timestamp(cap: cv2.VideoCapture, index: int, fps: float, fallback_fps: float) -> float:
    """Presentation time of the frame just grabbed; frame index over fps when the container gives none."""
    msec = cap.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(msec) and (msec > 0 or index == 0):
        return msec / 1000.0
    return index / (fps or fallback_fps)


ROI_SIDE = 264  # pixels a track's search region is scaled to: its face then spans ~120 px, well above HOG's 80 px


def detect_near(detector: FaceDetector, frame: np.ndarray, box: tuple[int, int, int, int]) -> list[Detection]:
    """Search only a region around ``box`` (2.2x its size), scaled so the face has a standard size."""
    h, w = frame.shape[:2]
    x, y, rw, rh = expand_box(box, 0.6, (w, h))
    scale = min(1.0, ROI_SIDE / max(rw, rh))
    roi = frame[y : y + rh, x : x + rw]
    if scale < 1.0:
        roi = cv2.resize(roi, (max(1, round(rw * scale)), max(1, round(rh * scale))), interpolation=cv2.INTER_AREA)
    return [
        Detection(
            x + round(d.x / scale), y + round(d.y / scale), round(d.width / scale), round(d.height / scale), d.score
        )
        for d in detector.detect(roi)
    ]


def _dedupe(found: list[Detection]) -> list[Detection]:
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: d.score, reverse=True):
        if all(iou(det.box, k.box) < 0.5 for k in kept):
            kept.append(det)
    return sorted(kept, key=lambda d: d.area, reverse=True)


def full_frame_min_face(frame: np.ndarray, opts: VideoOptions) -> int | None:
    """The face size a full-frame pass searches down to: the request's, or what ``detect_max_side`` allows."""
    side = max(frame.shape[:2])
    if opts.min_face_size or side <= opts.detect_max_side:
        return opts.min_face_size
    return math.ceil(HOG_WINDOW * side / opts.detect_max_side)


def _detect(frame: np.ndarray, scan: VideoScan, detector: FaceDetector, tracker: IouTracker, opts: VideoOptions):
    """Full-frame detection every ``full_detect_every`` samples (or with no live track), else around live tracks."""
    if not tracker.live or scan.frames_analyzed % max(1, opts.full_detect_every) == 0:
        found = detector.detect(frame, full_frame_min_face(frame, opts))
        return whole_image_if_small(frame, found, opts.whole_image_fallback_max_side)
    return _dedupe([d for track in tracker.live for d in detect_near(detector, frame, track.box)])


def _analyse_frame(
    frame: np.ndarray,
    t: float,
    index: int,
    scan: VideoScan,
    detector: FaceDetector,
    spec: InputSpec,
    tracker: IouTracker,
    opts: VideoOptions,
) -> None:
    started = time.perf_counter()
    smallest = opts.min_face_size or 0
    found = [d for d in _detect(frame, scan, detector, tracker, opts) if min(d.width, d.height) >= smallest]
    found = found[: opts.max_faces]
    ids = tracker.update(t, [d.box for d in found])
    for det, track_id in zip(found, ids, strict=True):
        face = to_uint8_face(crop_face(frame, det.box, spec), spec)
        scan.faces.append(FaceSample(round(t, 3), index, det.box, face, track_id))
    scan.frames_analyzed += 1
    scan.timings["detect"] += time.perf_counter() - started


_DONE = object()


def _sampled_frames(
    cap: cv2.VideoCapture, scan: VideoScan, opts: VideoOptions, out: queue.Queue, stop: threading.Event
):
    """Producer thread: decode sequentially, hand over the frame at or after each ``start + k / sample_fps``."""
    step, next_t, index, sampled = 1.0 / opts.sample_fps, opts.start, -1, 0
    try:
        while sampled < opts.max_frames and not stop.is_set():
            started = time.perf_counter()
            if not cap.grab():
                break
            index += 1
            scan.frames_decoded += 1
            t = _timestamp(cap, index, scan.fps, opts.sample_fps)
            if t > opts.max_duration:
                raise VideoError(413, f"video runs past the {opts.max_duration:.0f}s limit")
            if opts.end is not None and t > opts.end:
                break
            if t + 1e-6 < next_t:
                scan.timings["decode"] += time.perf_counter() - started
                continue
            ok, frame = cap.retrieve()
            scan.timings["decode"] += time.perf_counter() - started
            if ok and frame is not None:
                out.put((t, index, frame))  # blocks while the consumer is behind: not decode time
                sampled += 1
            while next_t <= t + 1e-6:
                next_t += step
        scan.last_index = index
        out.put(_DONE)
    except Exception as exc:
        out.put(exc)


def scan_video(path: str, spec: InputSpec, detector: FaceDetector, opts: VideoOptions) -> VideoScan:
    """Decode in a producer thread while this one detects, tracks and crops each sampled frame."""
    cap, scan = _open(path, opts)
    frames: queue.Queue = queue.Queue(maxsize=8)  # bounds memory to a few decoded frames
    stop = threading.Event()
    producer = threading.Thread(target=_sampled_frames, args=(cap, scan, opts, frames, stop), daemon=True)
    producer.start()
    tracker = IouTracker()
    try:
        while (item := frames.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            t, index, frame = item
            _analyse_frame(frame, t, index, scan, detector, spec, tracker, opts)
            if opts.progress is not None:
                opts.progress(t)
    finally:
        stop.set()
        while producer.is_alive():
            with contextlib.suppress(queue.Empty):
                frames.get_nowait()
            producer.join(timeout=0.05)
        cap.release()
    if scan.frames_decoded == 0:
        raise VideoError(422, "no frame of the video could be decoded")
    scan.duration = scan.duration or (scan.last_index + 1) / (scan.fps or opts.sample_fps)
    return scan


async def classify_samples(
    model: LoadedModel, faces: list[FaceSample], tta: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and valence/arousal for every face sample, in chunks through the batcher."""
    probs, va = [], []
    for start in range(0, len(faces), CLASSIFY_CHUNK):
        p, v = await classify_faces(model, [f.face for f in faces[start : start + CLASSIFY_CHUNK]], tta)
        probs.append(p)
        va.append(v)
    if not probs:
        return np.zeros((0, len(model.manifest.labels)), np.float32), None
    return np.concatenate(probs), (np.concatenate(va) if va[0] is not None else None)


def _windows(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` windows of ``size`` over ``n`` samples; a short tail joins the previous window."""
    bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < size // 2:
        bounds[-2] = (bounds[-2][0], bounds.pop()[1])
    return bounds


async def classify_clips(
    model: LoadedModel, faces: list[FaceSample]
) -> tuple[np.ndarray, np.ndarray | None, list[ClipPrediction]]:
    """Clip models: each track's samples in windows of ``input.frames``; every sample gets its window's prediction."""
    manifest, spec = model.manifest, model.manifest.input
    probs = np.zeros((len(faces), len(manifest.labels)), np.float32)
    va = np.zeros((len(faces), 2), np.float32) if manifest.valence_arousal != "none" else None
    clips: list[ClipPrediction] = []
    for track_id in sorted({f.track_id for f in faces}):
        idx = [i for i, f in enumerate(faces) if f.track_id == track_id]
        for lo, hi in _windows(len(idx), spec.frames or 1):
            members = idx[lo:hi]
            chosen = np.linspace(0, len(members) - 1, spec.frames).round().astype(int)
            frames = normalize(np.stack([faces[members[c]].face for c in chosen]), spec)  # T x C x H x W
            outputs = await model.infer(frames.transpose(1, 0, 2, 3)[None])
            p, v = postprocess(outputs, manifest, 1, tta=False)
            probs[members] = p[0]
            if va is not None and v is not None:
                va[members] = v[0]
            pred = affect(p, v, manifest.labels)[0]
            clips.append(
                ClipPrediction(
                    **pred.model_dump(), track_id=track_id, start=faces[members[0]].t, end=faces[members[-1]].t
                )
            )
    return probs, va, clips


def smooth(times: np.ndarray, values: np.ndarray, tau: float) -> np.ndarray:
    """Exponential moving average with time constant ``tau`` seconds (0 = off), aware of uneven spacing."""
    if tau <= 0 or len(values) < 2:
        return values
    out = values.copy()
    for i in range(1, len(values)):
        alpha = math.exp(-(times[i] - times[i - 1]) / tau)
        out[i] = alpha * out[i - 1] + (1 - alpha) * values[i]
    return out


def summarize(probs: np.ndarray, va: np.ndarray | None, labels: list[str]) -> EmotionSummary:
    mean = probs.mean(axis=0)
    share = np.bincount(probs.argmax(axis=1), minlength=len(labels)) / len(probs)
    return EmotionSummary(
        emotions={label: round(float(p), 6) for label, p in zip(labels, mean, strict=True)},
        dominant=labels[int(mean.argmax())],
        share={label: round(float(s), 4) for label, s in zip(labels, share, strict=True)},
        valence=None if va is None else round(float(va[:, 0].mean()), 4),
        arousal=None if va is None else round(float(va[:, 1].mean()), 4),
    )


def segments(times: list[float], dominant: list[str], step: float, duration: float) -> list[Segment]:
    """Runs of the same dominant label; each sample covers ``step`` seconds from its timestamp."""
    out: list[Segment] = []
    for t, label in zip(times, dominant, strict=True):
        end = round(min(t + step, duration) if duration else t + step, 3)
        if out and out[-1].dominant == label and t - out[-1].end <= step + 1e-6:
            out[-1].end = end
        else:
            out.append(Segment(start=t, end=end, dominant=label))
    return out


def _track_va(p: np.ndarray, va: np.ndarray | None, times: np.ndarray, labels: list[str], mode: str, tau: float):
    if mode == "derived":
        return derive_valence_arousal(p, labels)
    return smooth(times, va, tau) if va is not None else None


def build_tracks(
    faces: list[FaceSample],
    probs: np.ndarray,
    va: np.ndarray | None,
    labels: list[str],
    va_mode: str,
    opts: VideoOptions,
    duration: float,
) -> list[Track]:
    """Per-track timelines (smoothed), segments and summaries; tracks with the longest presence first."""
    tracks = []
    for track_id in sorted({f.track_id for f in faces}):
        idx = [i for i, f in enumerate(faces) if f.track_id == track_id]
        times = np.array([faces[i].t for i in idx])
        p = smooth(times, probs[idx], opts.smoothing)
        v = _track_va(p, va[idx] if va is not None else None, times, labels, va_mode, opts.smoothing)
        preds = affect(p, v, labels)
        timeline = [
            TimelinePoint(**pred.model_dump(), t=faces[i].t, frame=faces[i].frame, box=Box(**_box(faces[i].box)))
            for i, pred in zip(idx, preds, strict=True)
        ]
        step = 1.0 / opts.sample_fps
        tracks.append(
            Track(
                track_id=track_id,
                first_seen=timeline[0].t,
                last_seen=timeline[-1].t,
                timeline=timeline,
                segments=segments(times.tolist(), [q.dominant for q in preds], step, duration),
                summary=summarize(p, v, labels),
            )
        )
    tracks.sort(key=lambda tr: (-len(tr.timeline), tr.first_seen))
    return tracks


def _box(box: tuple[int, int, int, int]) -> dict[str, int]:
    return dict(zip(("x", "y", "width", "height"), (int(v) for v in box), strict=True))


async def analyse_video(
    path: str, model: LoadedModel, detector: FaceDetector, opts: VideoOptions, tta: bool
) -> VideoPredictionResponse:
    """A video file -> the ``/predict/video`` answer: scan (decode, detect, track, crop), classify, build tracks."""
    manifest = model.manifest
    scan = await asyncio.to_thread(scan_video, path, manifest.input, detector, opts)
    t0 = time.perf_counter()
    clips = []
    if manifest.task == "clip-classification":
        probs, va, clips = await classify_clips(model, scan.faces)
    else:
        probs, va = await classify_samples(model, scan.faces, tta)
    scan.timings["classify"] = time.perf_counter() - t0
    tracks = build_tracks(scan.faces, probs, va, manifest.labels, manifest.valence_arousal, opts, scan.duration)
    all_probs = np.concatenate([[list(p.emotions.values()) for p in t.timeline] for t in tracks]) if tracks else None
    all_va = None
    if tracks and manifest.valence_arousal != "none":
        all_va = np.array([[p.valence, p.arousal] for t in tracks for p in t.timeline], np.float32)
    return VideoPredictionResponse(
        duration_s=round(scan.duration, 3),
        fps=round(scan.fps, 3),
        width=scan.width,
        height=scan.height,
        frames_analyzed=scan.frames_analyzed,
        sample_fps=opts.sample_fps,
        model=model.ref,
        valence_arousal_source=manifest.valence_arousal,
        tracks=tracks,
        clips=clips,
        summary=summarize(all_probs, all_va, manifest.labels) if all_probs is not None else None,
        timings={**{k: round(v, 4) for k, v in scan.timings.items()}, "frames_decoded": scan.frames_decoded},
    )
