"""RetinaFace with a MobileNet-0.25 backbone (biubug6/Pytorch_Retinaface, MIT), run by onnxruntime.

The ONNX graph is the model store's entry ``retinaface`` (``model_store/retinaface/1.0.0``: MIT, exported by
ddfabbro's Tiny RetinaFace 0.1.0, copied unchanged, sha256 checked at load like every store file). Pre- and
post-processing are this module's own (vectorised anchors, OpenCV's NMS). Trained on WIDER FACE, whose annotations
are for research use: see the entry's manifest and model card.

Faces under about 56 px of the scanned image are found only by the graph's stride-8 level (its FPN merge, SSH
module and heads), which costs 40-45% of a call. A scan that seeks only larger faces (a ``min_face`` given: video
passes and regions, ``min_face_size`` requests) runs the graph without that level, cut from the entry's at load: the
other levels' outputs are the same tensors, so the same boxes (none of the photos' 898 faces nor the benchmark
clip's came from stride 8), at 0.55-0.6 times the cost. Photos scanned without a ``min_face`` keep every level
(``small_faces``).

Its boxes hug the face more tightly than HOG's and sit higher; ``hog_like`` moves them to HOG's geometry so every
published model keeps the crop it was calibrated on (the mapping was fitted on the shared photos where both found
the same face: IoU with HOG's box 0.72 before, 0.81 after).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_store import DEFAULT_ROOT, StoreError, find, verify_file
from model_store.runtime import session_options
from service.detection.base import Detection
from service.detection.scaling import rescaled, scan_scale, to_detections

log = logging.getLogger(__name__)
DEFAULT_MODEL = "retinaface"  # the store entry holding the graph
# The smallest face (HOG-like box side) found reliably, in pixels of the scanned image: 30 photo faces shrunk onto
# a gray canvas were found 9 times at 32 px, 21 at 48, 25 at 56, 29 at 64, 30 at 80 (HOG: 0, 3, 22, 26, 26; its
# window is 80). Video regions around tracks are sized from it: at 56 a tilted gray face in the benchmark clip
# scored under the threshold in 11 regions, at 64 in none.
RETINA_WINDOW = 64
MEAN_BGR = np.array([104.0, 117.0, 127.0], np.float32)  # as it was trained (its manifest's input.mean, on 0-255)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
# Without the stride-8 level, faces are found from this many pixels of the scan as often as with it
# (benchmarks.detector_levels: 30 photo faces on a 320 x 240 canvas, 27 either way at 56 px, 20 at 48, 5 against 16
# at 40; an earlier draw of 30 faces: 28 either way at 56, 25 against 27 at 48).
LARGE_LEVELS_FROM = 56
TOP_K = 5000  # boxes over the threshold kept for NMS at most
# HOG-like box from a RetinaFace box (w, h): side 0.94 * sqrt(w * h), centre moved by (-0.015 w, +0.032 h).
HOG_SIDE, HOG_DX, HOG_DY = 0.94, -0.015, 0.032


class RetinaFaceSettings(BaseModel):
    """``EMOTION_DETECTOR__RETINAFACE__*``."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.8, ge=0.05, le=1.0, description="least face probability kept (lower finds more)")
    nms: float = Field(0.4, ge=0.05, le=1.0, description="overlap (IoU) above which the weaker of two boxes goes")
    max_side: int = Field(
        320, ge=64, le=4096, description="longest side photos are scanned at; faces from 1/5 of it (most from 1/6)"
    )
    min_side: int = Field(160, ge=0, le=4096, description="smaller images are enlarged to this before scanning")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime threads per detection (requests run in parallel)")
    large_scan_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="threads for scans of at least large_scan_pixels (video full-frame passes, while the decoder "
        "leaves a core half idle), and for a lone scan of at least lone_scan_pixels",
    )
    large_scan_pixels: int = Field(150_000, ge=0, description="scans this large use large_scan_threads")
    lone_scan_pixels: int = Field(
        50_000,
        ge=0,
        description="scans this large use large_scan_threads while no other scan runs: a lone photo (320x240, 77k "
        "pixels) on both cores; a video's regions (211 px, 44.5k pixels) stay on one thread",
    )
    small_faces: bool = Field(
        True,
        description="photos scanned without a min_face also run the stride-8 level, which alone finds faces under "
        "56 px of the scan; false: those scans cost 0.55-0.6 times as much (scans with a min_face skip it anyway)",
    )
    hog_like: bool = Field(True, description="boxes in HOG's geometry, the crop the published models expect")
    model: str = Field(DEFAULT_MODEL, description="the store entry (task face-detection) holding the ONNX graph")
    version: str | None = Field(None, description="its version (default: the newest)")
    store_path: Path | None = Field(None, description="the store to read it from (default: the package's own)")

    @model_validator(mode="after")
    def _sides_in_order(self) -> RetinaFaceSettings:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})")
        return self


def load_weights(settings: RetinaFaceSettings | None = None) -> bytes:
    """The detector's ONNX graph from the store entry the settings name (default: the one shipped in the package),
    after checking its size and sha256."""
    own = settings or RetinaFaceSettings()
    root = own.store_path or DEFAULT_ROOT
    try:
        entry = find(own.model, own.version, root=root)
        if not entry.manifest.kind.component:
            raise StoreError(f"{entry.manifest.key} is a {entry.manifest.task} model, not a face detector")
        return verify_file(entry, "onnx").read_bytes()
    except StoreError as exc:
        raise RuntimeError(
            f"the retinaface face detector cannot load its weights: {exc}. The package ships them in "
            f"{DEFAULT_ROOT / DEFAULT_MODEL}; unset EMOTION_DETECTOR__RETINAFACE__STORE_PATH/__MODEL/__VERSION "
            "or reinstall the package"
        ) from exc


def without_small_face_level(graph: bytes) -> bytes:
    """The graph with its outputs' stride-8 rows (the first of each output's concatenated levels) removed, and the
    nodes only they needed pruned: the FPN's merge1, SSH1 and its heads. The rows left are the same values."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load_from_string(graph)
    made_by = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        node = made_by.get(output.name)
        while node is not None and node.op_type != "Concat":  # conf: a softmax after its concatenation
            node = made_by.get(node.input[0]) if node.input else None
        if node is None:
            raise ValueError(f"{output.name} is not a concatenation of levels: not this graph")
        if len(node.input) != len(STRIDES):
            raise ValueError(f"{output.name} joins {len(node.input)} levels, not {len(STRIDES)}: not this graph")
        del node.input[0]
    inputs, outputs = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    return Extractor(model).extract_model(inputs, outputs).SerializeToString()


@functools.lru_cache(maxsize=32)
def anchors(height: int, width: int, small_faces: bool = True) -> np.ndarray:
    """Prior boxes (cx, cy, w, h in pixels) for an input of this size, in the graph's output order; without the
    stride-8 level's with ``small_faces=False``."""
    out = []
    levels = list(zip(STRIDES, ANCHOR_SIZES, strict=True))
    for stride, sizes in levels if small_faces else levels[1:]:
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32) * stride + stride / 2
        per_cell = np.array([[s, s] for s in sizes], np.float32)  # the sizes vary fastest, as the graph lays them out
        out.append(np.concatenate([np.repeat(centres, len(sizes), axis=0), np.tile(per_cell, (len(centres), 1))], 1))
    priors = np.concatenate(out)
    priors.setflags(write=False)  # cached: shared by every call
    return priors


def decode(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 in input pixels from the graph's offsets."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def decode_landmarks(pre: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Five (x, y) points per box in input pixels from the graph's offsets (as biubug6 decodes them)."""
    offsets = pre.reshape(-1, 5, 2)
    return priors[:, None, :2] + offsets * VARIANCE[0] * priors[:, None, 2:]


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Three-channel BGR from gray (``HxW`` or ``HxWx1``), BGRA or BGR, as the graph reads it."""
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def hog_like(boxes: np.ndarray) -> np.ndarray:
    """RetinaFace boxes (x0, y0, x1, y1) moved to HOG's geometry: square, a little larger, a little lower."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + HOG_DX * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + HOG_DY * h
    half = HOG_SIDE * np.sqrt(np.maximum(w * h, 0)) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


class RetinaFaceDetector:
    """onnxruntime sessions shared by all requests (``run`` is thread-safe and releases the GIL): the whole graph and
    the one without its small-face level, each with ``threads`` and, for large scans and a lone one of a photo's
    size, ``large_scan_threads``."""

    name = "retinaface"
    Settings = RetinaFaceSettings

    def __init__(self, settings: RetinaFaceSettings | None = None, max_pixels: int = 2_000_000) -> None:
        import onnxruntime as ort

        self.settings = settings or RetinaFaceSettings()
        graph = load_weights(self.settings)

        def session(graph: bytes, threads: int) -> ort.InferenceSession:
            options = session_options(threads)
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

        graphs = {True: graph}  # runs the small-face level: the graph
        try:
            graphs[False] = without_small_face_level(graph)
        except ImportError:
            log.info("no onnx package: every RetinaFace scan runs the whole graph, small-face level included")
        except ValueError as exc:  # a store entry's graph laid out otherwise
            log.warning("RetinaFace graph of %s: %s; every scan runs the whole graph", self.settings.model, exc)
        threads = {False: self.settings.threads, True: self.settings.large_scan_threads}
        if threads[False] == threads[True]:
            threads.pop(True)
        # (runs the small-face level, a large scan): its session
        self._sessions = {(small, large): session(g, n) for small, g in graphs.items() for large, n in threads.items()}
        self.max_pixels = max_pixels
        self._scans, self._scans_lock = 0, threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> RetinaFaceDetector:
        return cls(settings.retinaface, max_pixels=settings.max_pixels)

    def smallest_face(self, scale: float = 1.0) -> float:
        return RETINA_WINDOW / scale

    def _session(self, pixels: int, small_faces: bool, alone: bool = True) -> tuple[Any, bool]:
        """The session for a scan of this many pixels (``alone``: no other scan running), and whether it runs the
        small-face level."""
        small_faces = small_faces or (False, False) not in self._sessions
        own = self.settings
        large = pixels >= own.large_scan_pixels or (alone and pixels >= own.lone_scan_pixels)
        return self._sessions[small_faces, large and (small_faces, True) in self._sessions], small_faces

    @contextmanager
    def _counted(self) -> Iterator[bool]:
        """Counts the scans in flight; yields whether this one runs alone, so that a lone photo's scan gets the
        cores concurrent ones would otherwise share (they take one thread each)."""
        with self._scans_lock:
            self._scans += 1
            alone = self._scans == 1
        try:
            yield alone
        finally:
            with self._scans_lock:
                self._scans -= 1

    def scan(self, image: np.ndarray, small_faces: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (x0, y0, x1, y1 in ``image`` pixels), probabilities over the threshold and five landmarks per box
        (``N x 5 x 2``, same pixels), after NMS; ``small_faces=False`` skips the stride-8 level."""
        bgr = to_bgr(image)
        # (pixel - mean) as float32, channels first: the same values as numpy's, in one pass (4x cheaper)
        x = cv2.dnn.blobFromImage(bgr, 1.0, None, MEAN_BGR.tolist(), False, False)
        with self._counted() as alone:
            session, small_faces = self._session(bgr.shape[0] * bgr.shape[1], small_faces, alone)
            loc, conf, marks = session.run(None, {"input": x})
        scores = conf[0, :, 1]
        keep = scores >= self.settings.threshold
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        priors = anchors(*bgr.shape[:2], small_faces)[keep]
        boxes, points = decode(loc[0][keep], priors), decode_landmarks(marks[0][keep], priors)
        scores = scores[keep]
        if len(scores) > TOP_K:  # a low threshold on a large scan: NMS only over the best (as biubug6 does)
            best = np.argsort(scores)[::-1][:TOP_K]
            boxes, scores, points = boxes[best], scores[best], points[best]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        chosen = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, self.settings.nms), int).ravel()
        return boxes[chosen], scores[chosen], points[chosen]

    def scale_for(self, h: int, w: int, min_face: int | None = None) -> float:
        """The scale an ``h x w`` image is scanned at: photos at ``max_side`` (small ones enlarged to ``min_side``);
        with ``min_face``, so that faces that large reach the window (within ``max_pixels``)."""
        own = self.settings
        return scan_scale(
            h,
            w,
            RETINA_WINDOW,
            min_face=min_face,
            min_side=own.min_side,
            max_side=own.max_side,
            max_pixels=self.max_pixels,
        )

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        h, w = image.shape[:2]
        own = self.settings
        scale = self.scale_for(h, w, min_face)
        # faces sought from LARGE_LEVELS_FROM px of the scan up need no stride-8 level
        small_faces = own.small_faces if min_face is None else min_face * scale < LARGE_LEVELS_FROM
        boxes, scores, points = self.scan(rescaled(image, scale), small_faces)
        if own.hog_like:
            boxes = hog_like(boxes)
        faces = []
        for box, score, marks in zip(boxes, scores, points, strict=True):
            for face in to_detections([(*box, score)], scale, h, w, float):  # none when clipped away
                faces.append(replace(face, landmarks=tuple((float(px), float(py)) for px, py in marks / scale)))
        return sorted(faces, key=lambda d: d.area, reverse=True)
