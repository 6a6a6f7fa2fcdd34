"""The features pipeline: JSON rows -> checked against the model's input (shape, finiteness, limits) -> one
prediction per row. The model's per-feature standardisation is applied by the Predictor (from the manifest)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from service.errors import InputTooLarge, InvalidInput
from service.metrics import Metrics
from service.registry import LoadedModel
from service.results import FeatureResult, ModelId


class FeaturePipeline:
    def __init__(self, max_rows: int, max_values: int, metrics: Metrics | None = None) -> None:
        self.max_rows, self.max_values, self.metrics = max_rows, max_values, metrics

    def check(self, rows: Sequence[Sequence[float]], length: int) -> np.ndarray:
        """``rows`` as an ``N x length`` float32 array; InvalidInput or InputTooLarge naming the expected shape."""
        shape = f"[N, {length}] (N rows of {length} numbers, 1 <= N <= {self.max_rows})"
        if not rows:
            raise InvalidInput(f"'features' holds no rows; send a list of rows of shape {shape}")
        if len(rows) > self.max_rows:
            raise InputTooLarge(
                f"{len(rows)} rows sent; at most {self.max_rows} per request (EMOTION_LIMITS__MAX_FEATURE_ROWS): "
                f"send shape {shape} in several requests"
            )
        values = sum(len(row) for row in rows)
        if values > self.max_values:
            raise InputTooLarge(
                f"{values} values sent; at most {self.max_values} per request (EMOTION_LIMITS__MAX_FEATURE_VALUES): "
                f"send fewer rows of shape [N, {length}]"
            )
        for i, row in enumerate(rows):
            if len(row) != length:
                raise InvalidInput(f"row {i} has {len(row)} values; this model takes rows of {length}: shape {shape}")
        with np.errstate(over="ignore"):  # values past float32's range become inf and are refused below
            x = np.asarray(rows, dtype=np.float64).astype(np.float32)
        if not np.isfinite(x).all():
            i, j = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
            raise InvalidInput(
                f"row {i}, feature {j} is {rows[i][j]!r}: features must be finite numbers (no NaN or inf)"
            )
        return x

    async def analyse(self, rows: Sequence[Sequence[float]], model: LoadedModel) -> FeatureResult:
        """One prediction per row, in row order."""
        model.require("features")
        predictor = model.predictor

        def prepare():
            return predictor.prepare_features(self.check(rows, model.manifest.input.length))

        prepared = await asyncio.to_thread(prepare)
        preds = await model.infer(prepared)
        if self.metrics is not None:
            self.metrics.observe_features(model.key, len(preds))
        return FeatureResult(ModelId.of(model.manifest), list(preds))
