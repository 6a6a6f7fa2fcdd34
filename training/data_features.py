"""Feature-vector datasets (EEG band powers and the like): a CSV with a ``label`` column, numeric feature columns
and optionally ``subject`` (whose recording a row is) and ``split`` (``train``/``val``/``test``).

Every other column is a feature, in file order; the model's input length is their count. Bad rows raise
:class:`DatasetError` naming the file, the row and the column.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import DatasetError

log = logging.getLogger(__name__)

META_COLUMNS = ("label", "subject", "split")


@dataclass
class FeatureArrays:
    """Raw feature rows ``N x L`` float32, targets ``N`` int64, and each row's subject (``""`` when unknown)."""

    x: np.ndarray
    targets: np.ndarray
    labels: list[str]
    subjects: np.ndarray
    columns: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    def class_counts(self) -> list[int]:
        return np.bincount(self.targets, minlength=len(self.labels)).tolist()

    def take(self, mask_or_idx: np.ndarray) -> FeatureArrays:
        """The rows selected by a boolean mask or an index array."""
        m = mask_or_idx
        return FeatureArrays(self.x[m], self.targets[m], self.labels, self.subjects[m], self.columns)


@dataclass
class FeatureTable:
    """A feature CSV as read: values, and per row its label, subject and split (strings)."""

    path: Path
    columns: list[str]
    x: np.ndarray
    labels: list[str]
    subjects: list[str]
    splits: list[str]


def _header(path: Path, reader) -> tuple[list[str], list[str]]:
    header = [name.strip() for name in (next(reader, None) or [])]
    if "label" not in header:
        raise DatasetError(f"{path}: no 'label' column; expected label[,subject][,split],<feature columns>")
    if len(set(header)) != len(header):
        raise DatasetError(f"{path}: duplicate column names in the header")
    features = [name for name in header if name not in META_COLUMNS]
    if not features:
        raise DatasetError(f"{path}: no feature columns besides {', '.join(c for c in header if c in META_COLUMNS)}")
    return header, features


def _row_values(path: Path, row_number: int, values: list[str], names: list[str]) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except ValueError:
        bad = next(i for i, v in enumerate(values) if not _is_number(v))
        raise DatasetError(f"{path}:{row_number}: column {names[bad]!r} holds {values[bad]!r}, not a number") from None
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise DatasetError(f"{path}:{row_number}: column {names[bad]!r} holds {values[bad]!r}; use finite numbers")
    return array


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_feature_csv(path: Path) -> FeatureTable:
    """Every row of a feature CSV; DatasetError naming the file, row and column for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header, features = _header(path, reader)
        index = {name: i for i, name in enumerate(header)}
        feature_idx = [index[name] for name in features]
        rows, labels, subjects, splits = [], [], [], []
        for row_number, row in enumerate(reader, start=2):
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise DatasetError(f"{path}:{row_number}: {len(row)} fields, the header has {len(header)}")
            label = row[index["label"]].strip()
            if not label:
                raise DatasetError(f"{path}:{row_number}: empty label")
            rows.append(_row_values(path, row_number, [row[i].strip() for i in feature_idx], features))
            labels.append(label)
            subjects.append(row[index["subject"]].strip() if "subject" in index else "")
            splits.append(row[index["split"]].strip() if "split" in index else "")
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    return FeatureTable(path, features, np.stack(rows).astype(np.float32), labels, subjects, splits)


def feature_splits(path: Path) -> set[str]:
    """The split names the CSV's ``split`` column holds (empty when it has none)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if "split" not in (reader.fieldnames or []):
            return set()
        return {(row.get("split") or "").strip() for row in reader} - {""}


def load_features(
    source: Path,
    split: str | None = None,
    labels: list[str] | None = None,
    subjects: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> FeatureArrays:
    """The rows of ``source`` (of ``split``, of ``subjects``) as arrays; ``labels`` fixes the output order (default:
    the labels found, sorted). Rows with other labels are dropped with a log line."""
    table = read_feature_csv(source)
    keep = np.ones(len(table.labels), bool)
    if split:
        keep &= np.array([s == split for s in table.splits])
    if subjects:
        wanted = set(subjects)
        keep &= np.array([s in wanted for s in table.subjects])
        if not keep.any():
            found = sorted(set(table.subjects) - {""})
            raise DatasetError(f"{source}: no rows of subject(s) {sorted(wanted)}; the file has {found or 'none'}")
    labels = labels or sorted(set(np.array(table.labels)[keep]))
    index = {name: i for i, name in enumerate(labels)}
    known = np.array([name in index for name in table.labels])
    dropped = sorted({name for name, k, ok in zip(table.labels, keep, known, strict=True) if k and not ok})
    if dropped:
        log.warning("%s: skipping rows with labels outside %s: %s", source, labels, dropped)
    idx = np.flatnonzero(keep & known)
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    if not len(idx):
        raise DatasetError(f"{source}: no rows with the labels {labels}{f' in split {split!r}' if split else ''}")
    targets = np.array([index[table.labels[i]] for i in idx], np.int64)
    subject_array = np.array([table.subjects[i] for i in idx], dtype=object)
    return FeatureArrays(table.x[idx], targets, list(labels), subject_array, table.columns)


def stratified_split(data: FeatureArrays, fraction: float, seed: int) -> tuple[FeatureArrays, FeatureArrays]:
    """``(rest, held_out)``: about ``fraction`` of each class held out (at least one row of each class with two or
    more rows, so both sides see every class where possible)."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(data.targets):
        rows = rng.permutation(np.flatnonzero(data.targets == c))
        n = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        held.extend(rows[:n].tolist())
    mask = np.zeros(len(data), bool)
    mask[held] = True
    return data.take(~mask), data.take(mask)


def standardization(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-feature mean and std of training rows (std 1 for a constant feature), for the manifest's input spec."""
    mean = x.astype(np.float64).mean(axis=0)
    std = x.astype(np.float64).std(axis=0)
    std[std < 1e-8] = 1.0
    return mean.tolist(), std.tolist()
