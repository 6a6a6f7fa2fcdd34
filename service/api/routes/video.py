"""Video prediction: tracked, timestamped emotion timelines per face."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, UploadFile

from service.api.deps import ApiKeyDep, ModelDep, PipelinesDep, SettingsDep, VideoRequestDep
from service.api.routes.predict import ERRORS
from service.api.uploads import spool_upload
from service.options import resolve_options
from service.schemas import VideoPredictionResponse, video_response

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])


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
    path = await spool_upload(file, settings.video.max_bytes, settings.temp_dir)
    try:
        async with asyncio.timeout(settings.video.timeout_s):
            return video_response(await pipelines.video.analyse(path, model, opts))
    finally:
        os.unlink(path)
