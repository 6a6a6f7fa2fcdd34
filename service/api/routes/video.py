"""Video prediction: tracked, timestamped emotion timelines per face."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, UploadFile

from service.api.deps import ApiKeyDep, DetectorDep, MetricsDep, ModelDep, SettingsDep
from service.api.routes.predict import ERRORS
from service.config import Settings
from service.schemas import VideoPredictionResponse
from service.video import VideoError, VideoOptions, analyse_video, sniff_video

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
    opts = VideoOptions.from_settings(
        settings,
        sample_fps,
        max_frames=min(max_frames or settings.max_video_frames, settings.max_video_frames),
        start=start,
        end=end,
        smoothing=smoothing,
        min_face_size=min_face_size or settings.min_face_size,
        max_faces=min(max_faces or settings.max_faces, settings.max_faces),
        max_duration=settings.max_video_duration_s,
    )
    started = time.perf_counter()
    path = await spool_upload(file, settings)
    try:
        async with asyncio.timeout(settings.video_timeout_s):
            response = await analyse_video(path, model, detector, opts, settings.tta)
    except VideoError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    finally:
        os.unlink(path)
    metrics.video_frames_decoded.inc(response.timings.get("frames_decoded", 0))
    metrics.video_frames_analyzed.inc(response.frames_analyzed)
    metrics.faces.inc(sum(len(t.timeline) for t in response.tracks))
    metrics.video_seconds.observe(time.perf_counter() - started)
    return response
