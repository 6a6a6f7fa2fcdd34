"""The attributes pipeline: decode an image once -> each frame-attributes model of a suite on the whole image.

No face detection: these models look at the whole frame (seed 000's scene and character classifiers). The models of
a suite run concurrently, each through its own micro-batcher.
"""

from __future__ import annotations

import asyncio

import numpy as np

from model_store import Prepared
from service.imaging import decode_image
from service.metrics import Metrics
from service.registry import LoadedModel
from service.results import AttributeSet, AttributesResult, ModelId


class AttributePipeline:
    def __init__(self, max_image_pixels: int, metrics: Metrics | None = None) -> None:
        self.max_image_pixels, self.metrics = max_image_pixels, metrics

    def prepare(self, data: bytes, models: list[LoadedModel]) -> tuple[np.ndarray, list[Prepared]]:
        """Decode once, resize for each model (the CPU-bound part, for one thread hop)."""
        image = decode_image(data, self.max_image_pixels)
        return image, [model.predictor.prepare([image]) for model in models]

    async def analyse(self, data: bytes, models: list[LoadedModel]) -> AttributesResult:
        """Every model's attributes for the image, in the order the models were named."""
        for model in models:
            model.require("frame")
        image, prepared = await asyncio.to_thread(self.prepare, data, models)
        preds = await asyncio.gather(*(m.infer(p) for m, p in zip(models, prepared, strict=True)))
        results = []
        for model, pred in zip(models, preds, strict=True):
            if self.metrics is not None:
                self.metrics.observe_attributes(model.key, model.manifest.labels, pred.present)
            results.append(
                AttributeSet(ModelId.of(model.manifest), pred.attributes(0), dict(model.manifest.thresholds))
            )
        return AttributesResult(image.shape[1], image.shape[0], results)
