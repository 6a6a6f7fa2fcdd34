"""The analysis layer: face, video, attribute and feature pipelines over a detector and the registry's models. The
HTTP routes and the offline scorer (``service.score``) are thin adapters over ``Pipelines``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.config import Settings
from service.detection import FaceDetector, create_detector
from service.detection.align import FaceCropper
from service.identity import FaceDescriber
from service.metrics import Metrics
from service.persons import PersonLinking
from service.pipelines.attributes import AttributePipeline
from service.pipelines.face import FacePipeline
from service.pipelines.features import FeaturePipeline
from service.pipelines.video import VideoPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipelines:
    detector: FaceDetector
    face: FacePipeline
    video: VideoPipeline
    attributes: AttributePipeline
    features: FeaturePipeline


def person_linking(settings: Settings) -> PersonLinking | None:
    """Linking tracks into persons as the video group says (None: off)."""
    video = settings.video
    if not video.link_persons:
        return None
    describer = FaceDescriber(int8_weights=settings.int8_weights)
    return PersonLinking(describer, video.person_threshold, video.person_faces)


def build_pipelines(settings: Settings, metrics: Metrics | None = None) -> Pipelines:
    """The pipelines the settings describe (the app's lifespan and the offline scorer both build them here)."""
    detector, limits = create_detector(settings.detector), settings.limits
    log.info("face detector: %s %s", settings.detector.backend, settings.detector.backend_settings().model_dump())
    cropper = FaceCropper(level=settings.detector.align)  # one landmark model for photos and video
    return Pipelines(
        detector,
        FacePipeline(detector, limits.max_image_pixels, metrics, cropper, settings.quality),
        VideoPipeline(detector, metrics, cropper, settings.quality, person_linking(settings), settings.video.max_scans),
        AttributePipeline(limits.max_image_pixels, metrics),
        FeaturePipeline(limits.max_feature_rows, limits.max_feature_values, metrics),
    )


__all__ = [
    "AttributePipeline",
    "FacePipeline",
    "FeaturePipeline",
    "Pipelines",
    "VideoPipeline",
    "build_pipelines",
]
