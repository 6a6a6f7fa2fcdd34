"""The analysis layer: face and video pipelines over a detector and the registry's models. The HTTP routes and the
offline scorer (``service.score``) are thin adapters over ``Pipelines``."""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.detection import FaceDetector, create_detector
from service.metrics import Metrics
from service.pipelines.face import FacePipeline
from service.pipelines.video import VideoPipeline


@dataclass(frozen=True)
class Pipelines:
    detector: FaceDetector
    face: FacePipeline
    video: VideoPipeline


def build_pipelines(settings: Settings, metrics: Metrics | None = None) -> Pipelines:
    """The pipelines the settings describe (the app's lifespan and the offline scorer both build them here)."""
    detector = create_detector(settings.detector)
    return Pipelines(
        detector,
        FacePipeline(detector, settings.limits.max_image_pixels, metrics),
        VideoPipeline(detector, metrics),
    )


__all__ = ["FacePipeline", "Pipelines", "VideoPipeline", "build_pipelines"]
