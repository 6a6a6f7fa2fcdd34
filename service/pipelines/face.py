"""The face pipeline: decode -> detect -> crop -> predict, for photos; decode -> predict for face crops.

The CPU-bound part of a photo (decode, detection, cropping, preprocessing) runs in one worker-thread hop; the
model call goes through the model's micro-batcher. A photo that would run alone (the batcher idle), and a small face
crop always, run their whole work in the batcher's thread: one hop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from model_store import InputSpec, Predictor, Prepared
from service.config import QualitySettings
from service.detection import Detection, FaceDetector, close_up_faces, whole_image_if_small
from service.detection.align import FaceCropper
from service.detection.bars import Picture
from service.errors import ServiceError
from service.imaging import declared_size, decode_image
from service.metrics import Metrics
from service.options import Options
from service.quality import PictureQuality, Thresholds, assess, picture_quality
from service.registry import LoadedModel
from service.results import DetectedFace, FaceResult, ImageResult, ModelId

# face crops this small (bytes, and pixels declared in the header) are decoded in the model's worker thread
INLINE_DECODE_BYTES, INLINE_DECODE_PIXELS = 16 * 1024, 256 * 256


def decodes_quickly(data: bytes) -> bool:
    """Small in bytes and in declared pixels, so decoding cannot hold a batch up (a compressed bomb can)."""
    if len(data) > INLINE_DECODE_BYTES:
        return False
    try:
        width, height = declared_size(data)
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
        """Faces in a decoded photo (inside its flat bars: ``opts.find_bars``), largest first, in its pixels."""
        picture = Picture.of(image, opts.find_bars)
        return [picture.to_image(f) for f in self._find(picture.view, opts)]

    def _find(self, image: np.ndarray, opts: Options) -> list[Detection]:
        """Faces at least ``min_face_size`` large, at most ``max_faces``; a picture with none found gets a finer
        look (if large), then a padded second scan, then (if small) is taken whole."""
        smallest = opts.min_face_size
        found = (
            self.detector.detect(image, smallest)
            or self._finer_look(image, opts)
            or close_up_faces(self.detector, image, opts.close_up_padding, smallest)
        )
        found = whole_image_if_small(image, found, opts.whole_image_fallback_max_side)
        return [f for f in found if smallest is None or min(f.width, f.height) >= smallest][: opts.max_faces]

    def _finer_look(self, image: np.ndarray, opts: Options) -> list[Detection]:
        """A large photo (a phone's) in which the first scan, at the detector's usual scale, found no face: scanned
        again for faces down to 1/``finer_look`` of its longest side, which that scan is too coarse to see. Not
        when the request set ``min_face_size``: the first scan looked that deep already."""
        side = max(image.shape[:2])
        if not opts.finer_look or side < opts.finer_look_from or opts.min_face_size is not None:
            return []
        return self.detector.detect(image, max(1, side // opts.finer_look))

    def cut(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec, opts: Options) -> np.ndarray:
        """One face of a photo (``box`` in its pixels) cut as ``prepare_image`` cuts it: inside the photo's bars."""
        picture = Picture.of(image, opts.find_bars)
        return self.cropper.crop(picture.view, picture.to_view(box), spec)

    def prepare_image(
        self, data: bytes, predictor: Predictor, opts: Options
    ) -> tuple[np.ndarray, list[Detection], Prepared]:
        """Decode, detect, crop (and align) with the model's margin and preprocess (the CPU-bound part, for one thread
        hop)."""
        image = decode_image(data, self.max_image_pixels)
        picture = Picture.of(image, opts.find_bars)
        found = self._find(picture.view, opts)
        spec = predictor.manifest.input
        prepared = predictor.prepare([self.cropper.crop(picture.view, f.box, spec) for f in found])
        return image, [picture.to_image(f) for f in found], prepared

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
        if model.batcher.idle():  # nobody to batch with: decode, detect, model and judging in one thread hop
            result = await _ImageJob(self, data, model, opts).run()
        else:
            image, faces, prepared, pictures = await asyncio.to_thread(
                self._prepare_and_judge, data, model.predictor, opts
            )
            result = self._judged(model, image, faces, pictures, await model.infer(prepared))
        if self.metrics is not None:
            self.metrics.faces.inc(len(result.faces))
        return result

    def _judged(self, model: LoadedModel, image, faces, pictures, preds) -> ImageResult:
        """A photo's faces with their predictions, each judged reliable or not."""
        found = [
            DetectedFace(f, preds[i], assess(pictures[i], preds.probabilities[i], self.quality))
            for i, f in enumerate(faces)
        ]
        return ImageResult(ModelId.of(model.manifest), image.shape[1], image.shape[0], found, image)

    async def analyse_face(self, data: bytes, model: LoadedModel) -> FaceResult:
        """The prediction for an already-cropped face. A small upload (``decodes_quickly``) is decoded, preprocessed,
        run and judged in the model's worker thread, batched with other requests (one thread hop, nothing on the
        event loop); a larger one is decoded in a thread of its own first, so it cannot hold up anyone's batch."""
        model.require_still()
        if decodes_quickly(data):
            return await _FaceJob(self, data, model).run()
        prepared, picture = await asyncio.to_thread(self.prepare_face, data, model.predictor)
        preds = await model.infer(prepared)
        return FaceResult(ModelId.of(model.manifest), preds[0], assess(picture, preds.probabilities[0], self.quality))


class _FaceJob:
    """A face crop's work for the model's worker thread: its rows (decode, preprocess, picture quality) before the
    batched model call, its result after it."""

    def __init__(self, pipeline: FacePipeline, data: bytes, model: LoadedModel) -> None:
        self.pipeline, self.data, self.model, self.predictor = pipeline, data, model, model.predictor
        self.prepared: Prepared | None = None
        self.picture: PictureQuality | None = None

    async def run(self) -> FaceResult:
        size = 2 if self.predictor.paired else 1  # a face's rows: itself, and its mirror image when paired with it
        return await self.model.run_work(self.rows, self.finish, size)

    def rows(self) -> np.ndarray:
        self.prepared, self.picture = self.pipeline.prepare_face(self.data, self.predictor)
        return self.prepared.x

    def finish(self, outputs: dict[str, np.ndarray]) -> FaceResult:
        assert self.prepared is not None and self.picture is not None
        preds = self.predictor.postprocess(outputs, self.prepared)
        judged = assess(self.picture, preds.probabilities[0], self.pipeline.quality)
        return FaceResult(ModelId.of(self.model.manifest), preds[0], judged)


class _ImageJob:
    """A photo's whole work for the model's worker thread when it would run alone: decode, detection, crops and
    picture quality before the model call, predictions and judging after it (one thread hop instead of two)."""

    def __init__(self, pipeline: FacePipeline, data: bytes, model: LoadedModel, opts: Options) -> None:
        self.pipeline, self.data, self.model, self.opts, self.predictor = pipeline, data, model, opts, model.predictor
        self.made: tuple | None = None

    async def run(self) -> ImageResult:
        return await self.model.run_work(self.rows, self.finish, 1)

    def rows(self) -> np.ndarray:
        self.made = self.pipeline._prepare_and_judge(self.data, self.predictor, self.opts)
        return self.made[2].x

    def finish(self, outputs: dict[str, np.ndarray]) -> ImageResult:
        assert self.made is not None
        image, faces, prepared, pictures = self.made
        preds = self.predictor.postprocess(outputs, prepared) if prepared.n else self.predictor.empty()
        return self.pipeline._judged(self.model, image, faces, pictures, preds)
