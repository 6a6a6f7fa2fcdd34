"""Face datasets: ImageFolder trees, the FER2013 CSV and a ``path,label,split`` manifest CSV, one interface.

Every format ends in :class:`FaceArrays`: uint8 faces already passed through the shared
``model_store.to_uint8_face`` (so training sees exactly what serving sees), integer targets and
optional valence/arousal targets.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model_store import InputSpec, to_uint8_face

log = logging.getLogger(__name__)

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
LABEL_ALIASES = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FER_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}


class DatasetError(ValueError):
    """A dataset cannot be read; the message names the file and row."""


def canonical_label(name: str) -> str:
    key = name.strip().lower()
    return LABEL_ALIASES.get(key, key)


@dataclass
class Sample:
    path: Path
    label: str
    valence_arousal: tuple[float, float] | None = None


@dataclass
class FaceArrays:
    """Faces ``NxHxWxC`` uint8, targets ``N`` int64, valence/arousal ``Nx2`` (NaN where unknown)."""

    images: np.ndarray
    targets: np.ndarray
    labels: list[str]
    valence_arousal: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def has_valence_arousal(self) -> bool:
        return bool(np.isfinite(self.valence_arousal).all(axis=1).any())

    def class_counts(self) -> list[int]:
        return np.bincount(self.targets, minlength=len(self.labels)).tolist()


def read_image_folder(root: Path, split: str | None) -> list[Sample]:
    """``root/<split>/<label>/*`` when that split folder exists, else ``root/<label>/*``."""
    base = root / split if split and (root / split).is_dir() else root
    samples = [
        Sample(path, canonical_label(path.parent.name))
        for path in sorted(base.glob("*/*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DatasetError(f"{base}: no images found under <label>/ folders")
    return samples


def _float_or_none(value: str | None, where: str, column: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: {column} {value!r} is not a number") from exc
    if not math.isfinite(number) or not -1.0 <= number <= 1.0:
        raise DatasetError(f"{where}: {column} {value!r} must lie in [-1, 1]")
    return number


def read_manifest_csv(path: Path, split: str | None) -> list[Sample]:
    """Rows ``path,label,split[,valence,arousal]``; paths relative to the CSV's folder."""
    samples = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {sorted(missing)}; expected path,label,split")
        for row_number, row in enumerate(reader, start=2):
            where = f"{path}:{row_number}"
            if split and (row.get("split") or "").strip() != split:
                continue
            if not (row.get("path") or "").strip() or not (row.get("label") or "").strip():
                raise DatasetError(f"{where}: empty path or label")
            file = (path.parent / row["path"].strip()).resolve()
            if not file.exists():
                raise DatasetError(f"{where}: file {row['path']!r} does not exist")
            valence = _float_or_none(row.get("valence"), where, "valence")
            arousal = _float_or_none(row.get("arousal"), where, "arousal")
            va = (valence, arousal) if valence is not None and arousal is not None else None
            samples.append(Sample(file, canonical_label(row["label"]), va))
    if not samples:
        raise DatasetError(f"{path}: no rows for split {split!r}")
    return samples


def read_fer_csv(path: Path, split: str | None, spec: InputSpec) -> tuple[list[np.ndarray], list[str]]:
    """The FER2013 CSV (``emotion,pixels,Usage``): 48x48 grayscale pixels as space-separated values."""
    faces, labels = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"emotion", "pixels"} <= set(reader.fieldnames or []):
            raise DatasetError(f"{path}: expected columns emotion,pixels[,Usage]")
        for row_number, row in enumerate(reader, start=2):
            where = f"{path}:{row_number}"
            usage = FER_USAGE.get((row.get("Usage") or "").strip().lower(), "train")
            if split and usage != split:
                continue
            try:
                emotion = int(row["emotion"])
                pixels = np.array(row["pixels"].split(), dtype=np.float32)
            except (ValueError, AttributeError) as exc:
                raise DatasetError(f"{where}: emotion must be an integer and pixels numbers") from exc
            if not 0 <= emotion < len(FER_LABELS):
                raise DatasetError(f"{where}: emotion {emotion} outside 0..{len(FER_LABELS) - 1}")
            side = math.isqrt(pixels.size)
            if side * side != pixels.size or side == 0:
                raise DatasetError(f"{where}: {pixels.size} pixel values do not form a square image")
            faces.append(to_uint8_face(pixels.reshape(side, side), spec))
            labels.append(FER_LABELS[emotion])
    if not faces:
        raise DatasetError(f"{path}: no rows for split {split!r}")
    return faces, labels


def available_splits(source: Path) -> set[str]:
    """The split names a source offers (``train``, ``val``, ...); empty when it is one pool."""
    fmt = detect_format(source)
    if fmt == "imagefolder":
        return {d.name for d in source.iterdir() if d.name in {"train", "val", "test"} and d.is_dir()}
    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        if fmt == "fer-csv":
            return {FER_USAGE.get((row.get("Usage") or "").strip().lower(), "train") for row in reader}
        return {(row.get("split") or "").strip() for row in reader} - {""}


def _load_one(sample: Sample, spec: InputSpec) -> np.ndarray:
    if spec.frames:
        return read_clip(sample.path, spec)
    flag = cv2.IMREAD_GRAYSCALE if spec.channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(sample.path), flag)
    if image is None:
        raise DatasetError(f"{sample.path}: cannot be decoded as an image")
    return to_uint8_face(image, spec)


def _decode_all(samples: list[Sample], spec: InputSpec, workers: int = 4) -> list[np.ndarray]:
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda s: _load_one(s, spec), samples)
        return list(tqdm(jobs, total=len(samples), desc="decode", unit="img", leave=False, mininterval=2))


def read_clip(path: Path, spec: InputSpec) -> np.ndarray:
    """A face-crop sequence (a video file or a folder of frame images) -> ``TxHxWxC`` uint8, T = ``spec.frames``."""
    if path.is_dir():
        frames = [
            cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    else:
        cap, frames = cv2.VideoCapture(str(path)), []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
    frames = [f for f in frames if f is not None]
    if not frames:
        raise DatasetError(f"{path}: no decodable frames")
    chosen = np.linspace(0, len(frames) - 1, spec.frames or 1).round().astype(int)
    return np.stack([to_uint8_face(frames[i], spec) for i in chosen])


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    order = np.arange(n)
    if limit is not None and limit < n:
        order = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    return order


def detect_format(source: Path) -> str:
    if source.is_dir():
        return "imagefolder"
    if source.suffix.lower() != ".csv":
        raise DatasetError(f"{source}: expected a folder or a .csv file")
    with open(source, newline="") as fh:
        header = {name.strip() for name in (next(csv.reader(fh), None) or [])}
    if {"emotion", "pixels"} <= header:
        return "fer-csv"
    if {"path", "label"} <= header:
        return "manifest-csv"
    raise DatasetError(f"{source}: unknown CSV header {sorted(header)}; expected emotion,pixels or path,label")


def _targets(labels: Iterable[str], known: list[str], where: Path) -> tuple[np.ndarray, np.ndarray]:
    """Indices of each label; rows whose label is not in ``known`` are dropped (with a log line)."""
    index = {name: i for i, name in enumerate(known)}
    labels = list(labels)
    keep = np.array([name in index for name in labels], dtype=bool)
    dropped = sorted({name for name in labels if name not in index})
    if dropped:
        log.warning("%s: skipping %d rows with labels outside the model's: %s", where, int((~keep).sum()), dropped)
    return np.array([index[name] for name in labels if name in index], dtype=np.int64), keep


def load_faces(
    source: Path,
    split: str | None,
    spec: InputSpec,
    labels: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> FaceArrays:
    """Read any supported format into memory; ``labels`` fixes the output order (default: FER2013's).

    With ``spec.frames`` set (clip models) each row of a manifest CSV or ImageFolder entry is a clip: a video
    file or a folder of frames, read as ``TxHxWxC``.
    """
    source = Path(source)
    labels = labels or FER_LABELS
    fmt = detect_format(source)
    va = None
    if fmt == "fer-csv":
        faces, names = read_fer_csv(source, split, spec)
        order = _subsample(len(faces), limit, seed)
        faces, names = [faces[i] for i in order], [names[i] for i in order]
    else:
        samples = read_image_folder(source, split) if fmt == "imagefolder" else read_manifest_csv(source, split)
        samples = [samples[i] for i in _subsample(len(samples), limit, seed)]
        faces, names = _decode_all(samples, spec), [s.label for s in samples]
        va = [s.valence_arousal or (np.nan, np.nan) for s in samples]
    targets, keep = _targets(names, labels, source)
    images = np.stack([face for face, k in zip(faces, keep, strict=True) if k])
    va_array = np.full((len(targets), 2), np.nan, np.float32) if va is None else np.asarray(va, np.float32)[keep]
    if len(targets) == 0:
        raise DatasetError(f"{source}: no samples with the labels {labels}")
    return FaceArrays(images, targets, list(labels), va_array)
