"""Evaluate a published model on a dataset: ``python -m training.evaluate --model model_store/N/V --data D``.

Face models read face datasets; feature models a feature CSV (per-class report); frame-attribute models a
``path,<attr>,...`` CSV (per-attribute AP and F1 at the manifest's thresholds).

Runs the store entry through ``model_store.Predictor``, the code path the service serves: ``model.onnx`` on
onnxruntime, or with ``--backend torch`` the ``torch.export`` program ``model.pt2`` (not the training code on the
safetensors), with the shared preprocessing, mirror TTA and the manifest's calibration temperature. Writes
``<output>/<name>.json``, ``<name>_per_class.json`` and ``<name>_confusion.png``. ``--robustness`` also scores
the same faces degraded the ways other data sets and cameras differ from the training data (lower resolution,
looser or tighter crops, rotation, blur, JPEG, dim light) into ``<name>_robustness.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model_store import BACKENDS, Predictor, StoreEntry, read_manifest
from training.attribute_reports import attribute_metrics, write_attribute_report
from training.data import load_faces
from training.data_attributes import attribute_splits, load_attributes
from training.data_features import feature_splits, load_features
from training.reports import classification_metrics, write_report

log = logging.getLogger("training.evaluate")


def tta_margin(text: str) -> float:
    """``--tta-margin``: a calibrated top-two margin, 0 to 1 (1: every face gets its mirror image)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (1: every face gets its mirror image)")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="store folder <store>/<name>/<version>")
    p.add_argument(
        "--data", type=Path, required=True, help="face dataset, feature CSV or attribute CSV (as the model's task)"
    )
    p.add_argument("--split", default="val", help="split to read when the source has several ('' for all)")
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="onnx",
        help="onnx-int8: the int8 graph the service runs by default",
    )
    p.add_argument("--no-tta", action="store_true")
    p.add_argument(
        "--tta-margin",
        type=tta_margin,
        help="mirror only faces whose calibrated margin is under this (1: every face; default: the manifest's "
        "mirror_tta_margin, as served)",
    )
    p.add_argument("--no-gate", action="store_true", help="every face gets the whole ensemble (gate off)")
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--output", type=Path, default=Path("runs/eval"))
    p.add_argument("--name", default="eval", help="report file prefix")
    p.add_argument("--robustness", action="store_true", help="also score degraded copies of the faces")
    return p


def _zoom(face: np.ndarray, factor: float) -> np.ndarray:
    """The face ``factor`` times its size in the same frame: < 1 a looser crop (border replicated), > 1 tighter."""
    h, w = face.shape[:2]
    if factor >= 1:
        ch, cw = round(h / factor), round(w / factor)
        y, x = (h - ch) // 2, (w - cw) // 2
        return cv2.resize(face[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(face, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    bottom, right = h - small.shape[0] - top, w - small.shape[1] - left
    return cv2.copyMakeBorder(small, top, bottom, left, right, cv2.BORDER_REPLICATE)


def _lowres(face: np.ndarray, side: int) -> np.ndarray:
    h, w = face.shape[:2]
    return cv2.resize(cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA), (w, h))


def _rotate(face: np.ndarray, degrees: float) -> np.ndarray:
    h, w = face.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(face, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _jpeg(face: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)


PERTURBATIONS = {
    "clean": lambda f: f,
    "low resolution 24 px": lambda f: _lowres(f, 24),
    "low resolution 16 px": lambda f: _lowres(f, 16),
    "looser crop (face 85%)": lambda f: _zoom(f, 0.85),
    "looser crop (face 70%)": lambda f: _zoom(f, 0.7),
    "tighter crop (face 115%)": lambda f: _zoom(f, 1.15),
    "rotated 20 degrees": lambda f: _rotate(f, 20),
    "gaussian blur 1 px": lambda f: cv2.GaussianBlur(f, (0, 0), 1.0),
    "JPEG quality 15": lambda f: _jpeg(f, 15),
    "dim (gamma 2)": lambda f: (255.0 * (f / 255.0) ** 2).astype(np.uint8),
}


def degrade(images: np.ndarray, name: str) -> list[np.ndarray]:
    """Apply one of ``PERTURBATIONS`` to every ``HxWxC`` uint8 face, keeping the shape."""
    fn = PERTURBATIONS[name]
    return [fn(face[..., 0] if face.shape[-1] == 1 else face).reshape(face.shape) for face in images]


def plot_robustness(rows: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(y - 0.2, [rows[n]["accuracy"] for n in names], 0.4, label="accuracy")
    ax.barh(y + 0.2, [rows[n]["macro_f1"] for n in names], 0.4, label="macro-F1")
    ax.set(yticks=y, yticklabels=names, xlim=(0, 1), title=title)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predict(predictor: Predictor, images: np.ndarray, batch_size: int, desc: str = "evaluate") -> np.ndarray:
    """Logits (before calibration) for model-sized uint8 faces, in batches so that a progress bar can follow."""
    chunks = tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False)
    return np.concatenate([predictor.predict_faces(images[s : s + batch_size], batch_size).logits for s in chunks])


def robustness(args, entry: StoreEntry, data, predictor: Predictor) -> dict[str, dict]:
    """Accuracy and macro-F1 under each of ``PERTURBATIONS``; written as JSON and a bar chart."""
    manifest, rows = entry.manifest, {}
    for name in tqdm(PERTURBATIONS, desc="robustness", unit="condition"):
        logits = predict(predictor, np.stack(degrade(data.images, name)), args.batch_size, name)
        m = classification_metrics(logits, data.targets, manifest.labels, manifest.calibration_temperature)
        recall = {label: c["recall"] for label, c in m["per_class"].items()}
        rows[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "recall": recall}
    (args.output / f"{args.name}_robustness.json").write_text(json.dumps(rows, indent=2))
    plot_robustness(rows, args.output / f"{args.name}_robustness.png", f"{manifest.key} on {args.data.name}")
    for name, row in rows.items():
        log.info("%-26s accuracy %.4f macro-F1 %.4f", name, row["accuracy"], row["macro_f1"])
    return rows


def evaluate_features(args, entry: StoreEntry, predictor: Predictor) -> dict:
    """A feature model on a feature CSV: the calibrated classification report."""
    split = args.split if args.split in feature_splits(args.data) else None  # no such split: every row
    data = load_features(args.data, split, entry.manifest.labels, limit=args.limit)
    logits = predictor.predict_features(data.x, args.batch_size).logits
    metrics = classification_metrics(logits, data.targets, data.labels, entry.manifest.calibration_temperature)
    write_report(args.output, args.name, metrics, data.labels)
    return metrics


def evaluate_attributes(args, entry: StoreEntry, predictor: Predictor) -> dict:
    """A frame-attributes model on a ``path,<attr>,...`` CSV, at the thresholds its manifest holds."""
    labels = entry.manifest.labels
    split = args.split if args.split in attribute_splits(args.data) else None
    data = load_attributes(args.data, split, entry.manifest.input, labels, args.limit)
    probs = predictor.predict_faces(data.images, args.batch_size).probabilities
    metrics = attribute_metrics(probs, data.targets, labels, [entry.manifest.thresholds[k] for k in labels])
    write_attribute_report(args.output, args.name, metrics)
    return metrics


EVALUATORS = {"features": evaluate_features, "frame": evaluate_attributes}


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    entry = StoreEntry(read_manifest(args.model), args.model)
    # first: a missing file fails fast
    predictor = Predictor.load(
        entry, args.backend, tta=not args.no_tta, tta_margin=args.tta_margin, gate=not args.no_gate
    )
    if entry.manifest.kind.input in EVALUATORS:
        metrics = EVALUATORS[entry.manifest.kind.input](args, entry, predictor)
        metrics.update(model=entry.manifest.key, data=str(args.data), split=args.split, backend=args.backend)
        log.info(
            "%s on %s: accuracy %.4f macro-F1 %.4f",
            entry.manifest.key,
            args.data,
            metrics["accuracy"],
            metrics["macro_f1"],
        )
        return metrics
    labels = entry.manifest.labels
    data = load_faces(args.data, args.split or None, entry.manifest.input, labels, args.limit)
    logits = predict(predictor, data.images, args.batch_size)
    metrics = classification_metrics(logits, data.targets, labels, entry.manifest.calibration_temperature)
    metrics.update(
        model=entry.manifest.key,
        data=str(args.data),
        split=args.split,
        backend=predictor.runner.backend,  # what ran: onnx-int8 falls back to fp32 where there is no int8 graph
        tta=predictor.tta,
        tta_margin=predictor.tta_margin,
        gate_margin=predictor.gate_margin,
    )
    write_report(args.output, args.name, metrics, labels)
    log.info(
        "%s on %s: accuracy %.4f macro-F1 %.4f ECE %.4f (%d samples)",
        entry.manifest.key,
        args.data,
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["ece"],
        metrics["samples"],
    )
    if args.robustness:
        metrics["robustness"] = robustness(args, entry, data, predictor)
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
