"""Evaluate a published model on any face dataset: ``python -m training.evaluate --model model_store/N/V --data D``.

Runs the store entry's ONNX file (or its slim weights through torch with ``--backend torch``) on the dataset
after the shared preprocessing, applies the manifest's calibration temperature and writes
``<output>/<name>.json``, ``<name>_per_class.json`` and ``<name>_confusion.png``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

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
    return p


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


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    entry = StoreEntry(read_manifest(args.model), args.model)
    spec, labels = entry.manifest.input, entry.manifest.labels
    data = load_faces(args.data, args.split or None, spec, labels, args.limit)
    run, tta = make_runner(entry, args.backend), not args.no_tta
    logits = []
    for start in tqdm(range(0, len(data), args.batch_size), desc="evaluate", unit="batch"):
        chunk = data.images[start : start + args.batch_size]
        out = run(preprocess(list(chunk), spec, hflip_tta=tta))
        logits.append((out[: len(chunk)] + out[len(chunk) :]) / 2 if tta else out)
    metrics = classification_metrics(
        np.concatenate(logits), data.targets, labels, entry.manifest.calibration_temperature
    )
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
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
