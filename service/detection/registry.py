"""The face detector backends by name: one line per backend module."""

from __future__ import annotations

from service.detection.base import FaceDetector
from service.detection.dlib_cnn import DlibCnnDetector, DlibHogCnnDetector
from service.detection.dlib_hog import DlibHogDetector
from service.detection.retinaface import RetinaFaceDetector

DETECTORS: dict[str, type[FaceDetector]] = {
    DlibHogDetector.name: DlibHogDetector,
    **{cls.name: cls for cls in (DlibCnnDetector, DlibHogCnnDetector, RetinaFaceDetector)},
}
