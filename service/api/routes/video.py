"""Video prediction: tracked, timestamped emotion timelines per face."""

from __future__ import annotations

import asyncio
import os
import tempfile

from fastapi import APIRouter, UploadFile

from service.api.deps import ApiKeyDep, ModelDep, PipelinesDep, SettingsDep, VideoRequestDep
from service.api.routes.predict import ERRORS
from service.config import Settings
from service.errors import InputTooLarge, InvalidInput
from service.options import resolve_options
from service.schemas import VideoPredictionResponse, video_response
from service.video.decode import check_container

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])
CHUNK = 1 << 20


async def spool_upload(file: UploadFile, settings: Settings) -> str:
    """Copy the upload to a temp file chunk by chunk (never whole in memory), checking container and size."""
    fd, path = tempfile.mkstemp(prefix="emotion-video-", suffix=".bin", dir=settings.temp_dir)
    written, limit = 0, settings.video.max_bytes
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(CHUNK):
                if written == 0:
                    check_container(chunk[:16])
                written += len(chunk)
                if written > limit:
                    raise InputTooLarge(f"video is larger than the {limit} byte limit")
                out.write(chunk)
        if written == 0:
            raise InvalidInput("the uploaded file is empty")
        return path
    except BaseException:
        os.unlink(path)
        raise


@router.post("/video", response_model=VideoPredictionResponse, responses=ERRORS)
async def predict_video(
    file: UploadFile,
    model: ModelDep,
    pipelines: PipelinesDep,
    settings: SettingsDep,
    requested: VideoRequestDep,
) -> VideoPredictionResponse:
    """Per-face emotion timelines for a video; clip models (``clip-classification``) add window predictions."""
    opts = resolve_options(settings, requested)
    path = await spool_upload(file, settings)
    try:
        async with asyncio.timeout(settings.video.timeout_s):
            return video_response(await pipelines.video.analyse(path, model, opts))
    finally:
        os.unlink(path)
