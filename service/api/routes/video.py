"""Video prediction: tracked, timestamped emotion timelines per face."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, UploadFile

from service.api.deps import ApiKeyDep, DetectorDep, MetricsDep, ModelDep, SettingsDep
from service.api.routes.predict import ERRORS, model_ref
from service.config import Settings
from service.schemas import VideoPredictionResponse
from service.video import (
    VideoError,
    VideoOptions,
    build_tracks,
    classify_clips,
    classify_samples,
    scan_video,
    sniff_video,
    summarize,
)

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])
CHUNK = 1 << 20


async def spool_upload(file: UploadFile, settings: Settings) -> str:
    """Copy the upload to a temp file chunk by chunk (never whole in memory); 413/415 on bad input."""
    fd, path = tempfile.mkstemp(prefix="emotion-video-", suffix=".bin", dir=settings.temp_dir)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(CHUNK):
                if written == 0 and sniff_video(chunk[:16]) is None:
                    raise HTTPException(415, "unsupported video container; send mp4, mov, avi, webm or mkv")
                written += len(chunk)
                if written > settings.max_video_bytes:
                    raise HTTPException(413, f"video is larger than the {settings.max_video_bytes} byte limit")
                out.write(chunk)
        if written == 0:
            raise HTTPException(422, "the uploaded file is empty")
        return path
    except BaseException:
        os.unlink(path)
        raise


@router.post("/video", response_model=VideoPredictionResponse, responses=ERRORS)
async def predict_video(
    file: UploadFile,
    model: ModelDep,
    settings: SettingsDep,
    detector: DetectorDep,
    metrics: MetricsDep,
    sample_fps: Annotated[float, Query(gt=0, le=60, description="frames analysed per second of video")] = 5.0,
    max_frames: Annotated[
        int | None, Query(ge=1, description="frames analysed at most (capped by the server limit)")
    ] = None,
    start: Annotated[float, Query(ge=0, description="seconds")] = 0.0,
    end: Annotated[float | None, Query(gt=0, description="seconds")] = None,
    smoothing: Annotated[float, Query(ge=0, le=10, description="EMA time constant in seconds; 0 = off")] = 0.25,
    max_faces: Annotated[int | None, Query(ge=1, le=100)] = None,
    min_face_size: Annotated[
        int | None,
        Query(ge=1, le=10000, description="smallest face to search for and return (pixels); as /predict/image"),
    ] = None,
) -> VideoPredictionResponse:
    """Per-face emotion timelines for a video; clip models (``clip-classification``) add window predictions."""
    if end is not None and end <= start:
        raise HTTPException(422, "end must be after start")
    opts = VideoOptions(
        sample_fps=sample_fps,
        max_frames=min(max_frames or settings.max_video_frames, settings.max_video_frames),
        start=start,
        end=end,
        smoothing=smoothing,
        min_face_size=min_face_size or settings.min_face_size,
        max_faces=min(max_faces or settings.max_faces, settings.max_faces),
        max_duration=settings.max_video_duration_s,
        full_detect_every=max(1, round(sample_fps * settings.video_full_detect_every_s)),
        whole_image_fallback_max_side=settings.whole_image_fallback_max_side,
        detect_max_side=settings.video_detector_max_side,
    )
    started = time.perf_counter()
    path = await spool_upload(file, settings)
    try:
        async with asyncio.timeout(settings.video_timeout_s):
            response = await _process(path, model, detector, settings, opts)
    except VideoError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    finally:
        os.unlink(path)
    metrics.video_frames_decoded.inc(response.timings.get("frames_decoded", 0))
    metrics.video_frames_analyzed.inc(response.frames_analyzed)
    metrics.faces.inc(sum(len(t.timeline) for t in response.tracks))
    metrics.video_seconds.observe(time.perf_counter() - started)
    return response


async def _process(path: str, model, detector, settings: Settings, opts: VideoOptions) -> VideoPredictionResponse:
    manifest = model.manifest
    scan = await asyncio.to_thread(scan_video, path, manifest.input, detector, opts)
    t0 = time.perf_counter()
    clips = []
    if manifest.task == "clip-classification":
        probs, va, clips = await classify_clips(model, scan.faces)
    else:
        probs, va = await classify_samples(model, scan.faces, settings.tta)
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
        model=model_ref(model),
        valence_arousal_source=manifest.valence_arousal,
        tracks=tracks,
        clips=clips,
        summary=summarize(all_probs, all_va, manifest.labels) if all_probs is not None else None,
        timings={**{k: round(v, 4) for k, v in scan.timings.items()}, "frames_decoded": scan.frames_decoded},
    )
