"""The face pipeline: decode -> detect -> crop -> predict, for photos; decode -> predict for face crops.

The CPU-bound part of a request (decode, detection, cropping, preprocessing) runs in one worker-thread hop; the
model call goes through the model's micro-batcher.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from model_store import InputSpec, Predictor, Prepared
from service.config import QualitySettings
from service.detection import Detection, FaceDetector, close_up_faces, whole_image_if_small
from service.detection.align import FaceCropper
from service.errors import ServiceError
from service.imaging import decode_image, image_size
from service.metrics import Metrics
from service.options import Options
from service.quality import PictureQuality, Thresholds, assess, picture_quality
from service.registry import LoadedModel
from service.results import DetectedFace, FaceResult, ImageResult, ModelId

# face crops this small (bytes, and pixels declared in the header) are decoded on the event loop (analyse_face)
INLINE_DECODE_BYTES, INLINE_DECODE_PIXELS = 16 * 1024, 256 * 256


def decodes_quickly(data: bytes) -> bool:
    """Small in bytes and in declared pixels, so decoding cannot hold the event loop up (a compressed bomb can)."""
    if len(data) > INLINE_DECODE_BYTES:
        return False
    try:
        width, height = image_size(data)
    except ServiceError:  # the worker thread's decode reports it
        return False
    return width * height <= INLINE_DECODE_PIXELS


class Cropper(Protocol):
    """Cuts a detected face out of a photo as the model expects it (``FaceCropper``: the manifest's framing)."""

    def crop(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray: ...


class FacePipeline:
    def __init__(
        self,
        detector: FaceDetector,
        max_image_pixels: int,
        metrics: Metrics | None = None,
        cropper: Cropper | None = None,
        quality: Thresholds | None = None,
    ) -> None:
        self.detector, self.max_image_pixels, self.metrics = detector, max_image_pixels, metrics
        self.cropper = cropper or FaceCropper()
        self.quality = quality or QualitySettings()  # the reliable rule's thresholds

    def find(self, image: np.ndarray, opts: Options) -> list[Detection]:
        """Faces in a decoded photo, largest first, at least ``min_face_size`` large, at most ``max_faces``; a photo
        with none found gets a padded second scan, then (if small) is taken whole."""
        smallest = opts.min_face_size
        found = self.detector.detect(image, smallest) or close_up_faces(
            self.detector, image, opts.close_up_padding, smallest
        )
        found = whole_image_if_small(image, found, opts.whole_image_fallback_max_side)
        return [f for f in found if smallest is None or min(f.width, f.height) >= smallest][: opts.max_faces]

    def prepare_image(
        self, data: bytes, predictor: Predictor, opts: Options
    ) -> tuple[np.ndarray, list[Detection], Prepared]:
        """Decode, detect, crop (and align) with the model's margin and preprocess (the CPU-bound part, for one thread
        hop)."""
        image = decode_image(data, self.max_image_pixels)
        faces = self.find(image, opts)
        spec = predictor.manifest.input
        return image, faces, predictor.prepare([self.cropper.crop(image, f.box, spec) for f in faces])

    def prepare_face(self, data: bytes, predictor: Predictor) -> tuple[Prepared, PictureQuality]:
        """Decode a face crop and preprocess it; the whole image is the face (no detector, no landmarks)."""
        face = decode_image(data, self.max_image_pixels)
        return predictor.prepare([face]), picture_quality(face, (0, 0, face.shape[1], face.shape[0]))

    def _prepare_and_judge(
        self, data: bytes, predictor: Predictor, opts: Options
    ) -> tuple[np.ndarray, list[Detection], Prepared, list[PictureQuality]]:
        """``prepare_image`` and each face's picture quality, in the same thread hop."""
        image, faces, prepared = self.prepare_image(data, predictor, opts)
        pictures = [picture_quality(image, f.box, f.landmarks, f.score) for f in faces]
        return image, faces, prepared, pictures

    async def analyse_image(self, data: bytes, model: LoadedModel, opts: Options) -> ImageResult:
        """Every face in a photo with its prediction and quality."""
        model.require_still()
        image, faces, prepared, pictures = await asyncio.to_thread(self._prepare_and_judge, data, model.predictor, opts)
        preds = await model.infer(prepared)
        if self.metrics is not None:
            self.metrics.faces.inc(len(faces))
        found = [
            DetectedFace(f, preds[i], assess(pictures[i], preds.probabilities[i], self.quality))
            for i, f in enumerate(faces)
        ]
        return ImageResult(ModelId.of(model.manifest), image.shape[1], image.shape[0], found, image)

    async def analyse_face(self, data: bytes, model: LoadedModel) -> FaceResult:
        """The prediction for an already-cropped face; a small upload is decoded on the event loop (a 48 px JPEG
        takes ~50 us, less than the hop to a worker thread and back), a larger one in a thread."""
        model.require_still()
        if decodes_quickly(data):
            prepared, picture = self.prepare_face(data, model.predictor)
        else:
            prepared, picture = await asyncio.to_thread(self.prepare_face, data, model.predictor)
        preds = await model.infer(prepared)
        return FaceResult(ModelId.of(model.manifest), preds[0], assess(picture, preds.probabilities[0], self.quality))
