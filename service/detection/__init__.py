"""Face detection behind a small protocol (``base.FaceDetector``). Each backend is one module and one line in
``DETECTORS``; its settings group (``EMOTION_DETECTOR__<BACKEND>__*``) comes from the class's own ``Settings``."""

from __future__ import annotations

from service.detection.base import Detection, FaceDetector, whole_image_if_small
from service.detection.dlib_hog import DlibHogDetector
from service.detection.looks import close_up_faces
from service.detection.registry import DETECTORS
from service.detection.settings import DetectorSettings


def create_detector(settings: DetectorSettings) -> FaceDetector:
    """The backend the detector settings name, built from them (the app and the offline scorer both call this)."""
    if settings.backend not in DETECTORS:
        raise ValueError(f"unknown face detector {settings.backend!r}; available: {', '.join(DETECTORS)}")
    return DETECTORS[settings.backend].from_settings(settings)  # type: ignore[attr-defined]


__all__ = [
    "DETECTORS",
    "Detection",
    "DetectorSettings",
    "DlibHogDetector",
    "FaceDetector",
    "close_up_faces",
    "create_detector",
    "whole_image_if_small",
]
