"""Evaluate a published model on any face dataset: ``python -m training.evaluate --model model_store/N/V --data D``.

Runs the store entry's ONNX file (or its slim weights through torch with ``--backend torch``) on the dataset
after the shared preprocessing, applies the manifest's calibration temperature and writes
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
import onnxruntime as ort
import torch
from tqdm import tqdm

from model_store import Manifest, StoreEntry, preprocess, read_manifest, verify_file
from training.data import load_faces
from training.engine import split_outputs
from training.models import create_model
from training.reports import classification_metrics, write_report
from training.runs import load_weights

log = logging.getLogger("training.evaluate")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="store folder <store>/<name>/<version>")
    p.add_argument("--data", type=Path, required=True, help="ImageFolder root, FER2013 CSV or path,label,split CSV")
    p.add_argument("--split", default="val", help="split to read when the source has several ('' for all)")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    p.add_argument("--no-tta", action="store_true")
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


def make_runner(entry: StoreEntry, backend: str):
    """A function ``NCHW float32 -> logits`` for the entry, on CPU."""
    manifest: Manifest = entry.manifest
    if backend == "onnx":
        session = ort.InferenceSession(str(verify_file(entry, "onnx")), providers=["CPUExecutionProvider"])
        return lambda x: session.run([manifest.outputs[0]], {"input": x})[0]
    model = create_model(
        manifest.architecture, len(manifest.labels), in_chans=manifest.input.channels, **manifest.architecture_args
    )
    load_weights(model, verify_file(entry, "weights"))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return split_outputs(model(torch.from_numpy(x)))[0].numpy()

    return run


def predict(run, images, spec, tta: bool, batch_size: int, desc: str = "evaluate") -> np.ndarray:
    """Logits for every face, in batches through the shared preprocessing (mirror-averaged with ``tta``)."""
    logits = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False):
        chunk = images[start : start + batch_size]
        out = run(preprocess(list(chunk), spec, hflip_tta=tta))
        logits.append((out[: len(chunk)] + out[len(chunk) :]) / 2 if tta else out)
    return np.concatenate(logits)


def robustness(args, entry: StoreEntry, data, run, tta: bool) -> dict[str, dict]:
    """Accuracy and macro-F1 under each of ``PERTURBATIONS``; written as JSON and a bar chart."""
    manifest, rows = entry.manifest, {}
    for name in tqdm(PERTURBATIONS, desc="robustness", unit="condition"):
        logits = predict(run, degrade(data.images, name), manifest.input, tta, args.batch_size, name)
        m = classification_metrics(logits, data.targets, manifest.labels, manifest.calibration_temperature)
        recall = {label: c["recall"] for label, c in m["per_class"].items()}
        rows[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "recall": recall}
    (args.output / f"{args.name}_robustness.json").write_text(json.dumps(rows, indent=2))
    plot_robustness(rows, args.output / f"{args.name}_robustness.png", f"{manifest.key} on {args.data.name}")
    for name, row in rows.items():
        log.info("%-26s accuracy %.4f macro-F1 %.4f", name, row["accuracy"], row["macro_f1"])
    return rows


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    entry = StoreEntry(read_manifest(args.model), args.model)
    spec, labels = entry.manifest.input, entry.manifest.labels
    data = load_faces(args.data, args.split or None, spec, labels, args.limit)
    run, tta = make_runner(entry, args.backend), not args.no_tta
    logits = predict(run, data.images, spec, tta, args.batch_size)
    metrics = classification_metrics(logits, data.targets, labels, entry.manifest.calibration_temperature)
    metrics.update(model=entry.manifest.key, data=str(args.data), split=args.split, backend=args.backend, tta=tta)
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
        metrics["robustness"] = robustness(args, entry, data, run, tta)
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
