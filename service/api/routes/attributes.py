"""Frame attributes: a whole image through one frame-attributes model, or a suite of them at once."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, ImageBytesDep, PipelinesDep, SettingsDep, SuiteDep
from service.api.routes.predict import ERRORS, RAW_IMAGE_BODY
from service.schemas import AttributesPredictionResponse, attributes_response

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])


@router.post("/attributes", response_model=AttributesPredictionResponse, responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def predict_attributes(
    data: ImageBytesDep, models: SuiteDep, pipelines: PipelinesDep, settings: SettingsDep
) -> AttributesPredictionResponse:
    """Score the whole image (no face detection) with each named ``frame-attributes`` model: a probability per
    attribute and the attributes over their thresholds. Name several models for a suite (``model=a&model=b``; pin a
    version with ``model=a:1.2.0``); ``results`` holds one entry per model, in the order named."""
    async with asyncio.timeout(settings.limits.request_timeout_s):
        return attributes_response(await pipelines.attributes.analyse(data, models))
