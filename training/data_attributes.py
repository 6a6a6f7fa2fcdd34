"""Multi-label frame datasets: a CSV ``path,<attr1>,<attr2>,...[,split]`` with one image per row and a 0/1 value
per attribute (``true``/``false`` and ``yes``/``no`` work too); paths are relative to the CSV's folder.

Images are whole frames, resized to the model's input through the shared ``model_store.to_uint8_face`` (no face
detection, no crop), so training sees what serving sees. Bad rows raise :class:`DatasetError` naming file and row.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model_store import InputSpec, to_uint8_face
from training.data import DatasetError

TRUE, FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


@dataclass
class AttributeArrays:
    """Frames ``N x H x W x C`` uint8 (RGB for 3 channels) and multi-hot targets ``N x K`` float32."""

    images: np.ndarray
    targets: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    def positives(self) -> list[int]:
        return self.targets.sum(axis=0).astype(int).tolist()


def _flag(value: str, where: str, column: str) -> float:
    key = value.strip().lower()
    if key in TRUE:
        return 1.0
    if key in FALSE:
        return 0.0
    raise DatasetError(f"{where}: column {column!r} holds {value!r}; use 1 or 0 (true/false, yes/no)")


def read_attribute_csv(path: Path, split: str | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """``(image paths, targets N x K, attribute names)`` of the rows in ``split`` (every row when None)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [name.strip() for name in reader.fieldnames or []]
        if "path" not in header:
            raise DatasetError(f"{path}: no 'path' column; expected path,<attribute>,...[,split]")
        attributes = [name for name in header if name not in {"path", "split"}]
        if not attributes:
            raise DatasetError(f"{path}: no attribute columns after 'path'")
        files, targets = [], []
        for row_number, row in enumerate(reader, start=2):
            where = f"{path}:{row_number}"
            if None in row or any(row.get(a) is None for a in attributes):
                raise DatasetError(f"{where}: {len(header)} fields expected")
            if split and (row.get("split") or "").strip() != split:
                continue
            name = (row.get("path") or "").strip()
            if not name:
                raise DatasetError(f"{where}: empty path")
            file = (path.parent / name).resolve()
            if not file.is_file():
                raise DatasetError(f"{where}: file {name!r} does not exist")
            targets.append([_flag(row[a], where, a) for a in attributes])
            files.append(file)
    if not files:
        raise DatasetError(f"{path}: no rows{f' for split {split!r}' if split else ''}")
    return files, np.asarray(targets, np.float32), attributes


def attribute_splits(path: Path) -> set[str]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if "split" not in (reader.fieldnames or []):
            return set()
        return {(row.get("split") or "").strip() for row in reader} - {""}


def _decode(file: Path, spec: InputSpec) -> np.ndarray:
    image = cv2.imread(str(file), cv2.IMREAD_COLOR if spec.channels == 3 else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"{file}: cannot be decoded as an image")
    return to_uint8_face(image, spec)


def load_attributes(
    source: Path,
    split: str | None,
    spec: InputSpec,
    labels: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> AttributeArrays:
    """Frames and targets of ``split``; ``labels`` picks and orders attributes (default: the CSV's columns)."""
    files, targets, attributes = read_attribute_csv(source, split)
    if labels:
        missing = [a for a in labels if a not in attributes]
        if missing:
            raise DatasetError(f"{source}: no column for attribute(s) {missing}; the file has {attributes}")
        targets = targets[:, [attributes.index(a) for a in labels]]
        attributes = list(labels)
    idx = np.arange(len(files))
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    with ThreadPoolExecutor(4) as pool:
        jobs = pool.map(lambda i: _decode(files[i], spec), idx)
        images = list(tqdm(jobs, total=len(idx), desc="decode", unit="img", leave=False, mininterval=2))
    return AttributeArrays(np.stack(images), targets[idx], attributes)


def holdout(data: AttributeArrays, fraction: float, seed: int) -> tuple[AttributeArrays, AttributeArrays]:
    """A random ``fraction`` of the frames held out for validation (at least one)."""
    order = np.random.default_rng(seed).permutation(len(data))
    n = max(1, round(fraction * len(data)))
    val, train = np.sort(order[:n]), np.sort(order[n:])
    return (
        AttributeArrays(data.images[train], data.targets[train], data.labels),
        AttributeArrays(data.images[val], data.targets[val], data.labels),
    )
