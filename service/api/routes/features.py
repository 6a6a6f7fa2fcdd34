"""Feature vectors: rows of numbers (e.g. EEG band powers) through a feature-classification model."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, JsonBodyDep, ModelDep, PipelinesDep, SettingsDep
from service.api.routes.predict import ERRORS
from service.schemas import FeaturePredictionRequest, FeaturePredictionResponse, features_response

router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])
FEATURE_ERRORS = {
    code: ERRORS[code] | ({"description": text} if text else {})
    for code, text in {
        401: None,
        404: None,
        413: "too many rows or values (EMOTION_LIMITS__MAX_FEATURE_ROWS, __MAX_FEATURE_VALUES), or body too large",
        415: "the body is not declared JSON (Content-Type: application/json)",
        422: "malformed JSON, a row of the wrong length, NaN or infinite values, or not a feature model",
        503: None,
    }.items()
}


@router.post(
    "/features", response_model=FeaturePredictionResponse, responses=FEATURE_ERRORS, dependencies=[JsonBodyDep]
)
async def predict_features(
    body: FeaturePredictionRequest, model: ModelDep, pipelines: PipelinesDep, settings: SettingsDep
) -> FeaturePredictionResponse:
    """One prediction per row of raw features, for a ``feature-classification`` model: each row holds the model's
    ``input.length`` numbers in the order it was trained on; the service applies the model's standardisation."""
    async with asyncio.timeout(settings.limits.request_timeout_s):
        return features_response(await pipelines.features.analyse(body.features, model))
