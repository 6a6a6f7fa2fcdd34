"""The one preprocessing: face image (or whole frame) -> model input, and feature rows -> standardised rows.
Training, evaluation and serving all use it."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from model_store.manifest import FeatureSpec, InputSpec


def to_uint8_face(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize a face crop and convert its channels: ``HxW`` or ``HxWx3`` (BGR) -> ``H'xW'xC`` uint8.

    A gray face (one plane, or three equal ones: 78% of the shared photos) is resized as one plane and repeated
    after: the same bytes as resizing three, a third of the work."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    resize = image.shape[:2] != (spec.height, spec.width)
    if spec.channels == 3 and image.shape[2] == 3 and resize:
        plane = gray_plane(image)
        image = image if plane is None else plane[:, :, None]
    if spec.channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    if resize:
        shrink = image.shape[0] > spec.height
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        image = cv2.resize(image, (spec.width, spec.height), interpolation=interp)
        if image.ndim == 2:
            image = image[:, :, None]
    if spec.channels == 3 and image.shape[2] == 1:
        return cv2.merge([image] * 3)  # resizing works per plane, so repeating after it gives the same bytes
    if spec.channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # the same bytes as [:, :, ::-1], 30x cheaper
    return np.ascontiguousarray(image)


def gray_plane(image: np.ndarray) -> np.ndarray | None:
    """The first plane of an ``HxWx3`` image whose three planes are equal, else None. A row is compared first, so
    a colour face costs microseconds."""
    middle = image[image.shape[0] // 2]
    if not (np.array_equal(middle[:, 0], middle[:, 1]) and np.array_equal(middle[:, 0], middle[:, 2])):
        return None
    first = cv2.extractChannel(image, 0)
    for k in (1, 2):
        if cv2.norm(first, cv2.extractChannel(image, k), cv2.NORM_INF):
            return None
    return first


def normalize(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Channels-last uint8 (or float in 0..255) -> channels-first float32 with the manifest's mean and std.

    ``NxHxWxC`` -> ``NxCxHxW`` for face models; ``NxTxHxWxC`` -> ``NxCxTxHxW`` for clip models.
    """
    x = np.asarray(batch, dtype=np.float32) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) / std
    axes = (0, 4, 1, 2, 3) if x.ndim == 5 else (0, 3, 1, 2)
    return np.ascontiguousarray(x.transpose(axes))


def prepare_batch(batch: np.ndarray, spec: InputSpec, hflip_tta: bool = False) -> np.ndarray:
    """Model-sized uint8 faces (or clips) -> model input; with ``hflip_tta`` mirrored copies follow as rows N..2N-1."""
    batch = np.asarray(batch)
    if batch.dtype == np.uint8 and batch.ndim == 4:
        return normalize_faces(batch, spec, hflip_tta)
    if hflip_tta:
        batch = np.concatenate([batch, batch[..., ::-1, :]], axis=0)
    return normalize(batch, spec)


def normalize_faces(faces: np.ndarray, spec: InputSpec, hflip_tta: bool = False) -> np.ndarray:
    """``normalize`` for uint8 ``NxHxWxC`` faces: each channel's plane through a 256-entry table (OpenCV's ``LUT``,
    which leaves the GIL to other threads) into the channels-first batch, mirrors copied from it. The same float32
    values, several times cheaper than converting, scaling and transposing the whole batch."""
    n, h, w, c = faces.shape
    table = _lookup_table(tuple(spec.mean), tuple(spec.std), c)
    out = np.empty((2 * n if hflip_tta else n, c, h, w), np.float32)
    if n == 0:
        return out
    rows = np.ascontiguousarray(faces).reshape(n * h, w, c)
    planes = cv2.split(rows) if c > 1 else [rows[..., 0]]
    for k, plane in enumerate(planes):
        out[:n, k] = cv2.LUT(plane, table[k : k + 1]).reshape(n, h, w)
    if hflip_tta:
        out[n:] = out[:n, :, :, ::-1]
    return out


@functools.lru_cache(maxsize=32)
def _lookup_table(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> np.ndarray:
    """``C x 256``: what ``normalize`` makes of each uint8 level, per channel (the same float32 operations)."""
    levels = np.arange(256, dtype=np.float32) / 255.0
    m = np.broadcast_to(np.asarray(mean, dtype=np.float32), (channels,))
    s = np.broadcast_to(np.asarray(std, dtype=np.float32), (channels,))
    return np.stack([(levels - m[k]) / s[k] for k in range(channels)])


def preprocess(faces: Sequence[np.ndarray], spec: InputSpec, hflip_tta: bool = False) -> np.ndarray:
    """Face crops of any size -> model batch ``NxCxHxW`` (resize, channels, normalisation, optional mirror TTA)."""
    if not len(faces):
        return prepare_batch(np.zeros((0, spec.height, spec.width, spec.channels), np.uint8), spec, hflip_tta)
    return prepare_batch(np.stack([to_uint8_face(face, spec) for face in faces]), spec, hflip_tta)


def expand_box(box: tuple[int, int, int, int], margin: float, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Grow ``(x, y, w, h)`` by ``margin`` per side, make it square, and clip it to the image ``(w, h)``."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = round(cx + side / 2), round(cy + side / 2)
    width, height = image_size
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def crop_face(image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray:
    """Cut a detected face out of a full image with the margin the model was trained with: the square around the
    box (``expand_box``). With ``spec.edge == "replicate"`` what of the square lies outside the image is filled by
    repeating the image's border, so a face at the edge is not cut off and then stretched by the resize, and keeps
    the crop it would get on a larger canvas (issue 30, ``docs/stability.md``); with ``"clip"`` (and for a square
    wholly outside) the square is clipped to the image."""
    h, w = image.shape[:2]
    x, y, bw, bh = box
    side = max(bw, bh) * (1.0 + 2.0 * spec.face_margin)
    cx, cy = x + bw / 2.0, y + bh / 2.0
    x0, y0, x1, y1 = round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)
    if spec.edge == "clip" or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        x, y, bw, bh = expand_box(box, spec.face_margin, (w, h))
        return image[y : y + bh, x : x + bw]
    inside = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    pads = max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w)
    return cv2.copyMakeBorder(inside, *pads, cv2.BORDER_REPLICATE) if any(pads) else inside


def standardize(rows: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Feature rows ``N x L`` -> ``(x - mean) / std`` per feature, float32, as the manifest says (training computed
    mean and std on its training rows). ValueError when a row is not ``spec.length`` long."""
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != spec.length:
        raise ValueError(f"expected feature rows of shape [N, {spec.length}], got {list(x.shape)}")
    if spec.mean is not None:
        x = x - np.asarray(spec.mean, dtype=np.float32)
    if spec.std is not None:
        x = x / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)
