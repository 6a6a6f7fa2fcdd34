"""Real-photo evaluation on ``shared/data/photos``: face detection and end-to-end expression accuracy.

1. Detection: photos in which the detector finds at least one face, ms per photo, and false faces on generated
   faceless images, for dlib's default threshold and the service's settings.
2. End to end: the largest detected face of each photo through the default model (service preprocessing, crop
   margin, mirror TTA, calibration) against the photo's hand label (noisy; ``contempt`` has no model class and is
   left out). Writes ``photos.json``, ``photos_per_class.json`` and ``photos_confusion.png``.

    python -m benchmarks.eval_photos [--output runs/eval_photos] [--margins 0.0 0.1 0.2]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model_store import Predictor, crop_face, find
from service.detection import DlibHogDetector
from training.data import canonical_label
from training.reports import classification_metrics, write_report

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("runs/eval_photos"))
    p.add_argument("--model", default="fer_emotion_cnn")
    p.add_argument("--margins", type=float, nargs="*", default=[], help="also score these crop margins")
    p.add_argument("--negatives", type=int, default=200)
    return p


def faceless_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Noise, gradients, blurred textures and random shapes: nothing a detector should call a face."""
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        elif kind == 1:
            image = cv2.merge([np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))] * 3)
        elif kind == 2:
            blur = cv2.GaussianBlur(
                rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), int(rng.integers(2, 10))
            )
            image = cv2.normalize(blur, None, 0, 255, cv2.NORM_MINMAX)
        else:
            image = np.full((480, 640, 3), 200, np.uint8)
            for _ in range(12):
                center = tuple(int(v) for v in rng.integers(0, 640, 2))
                cv2.circle(image, center, int(rng.integers(10, 80)), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        out.append(image)
    return out


def detection_report(photos: list[np.ndarray], negatives: list[np.ndarray]) -> tuple[dict, list]:
    results, service_faces = {}, []
    for name, detector in (
        ("dlib_default_threshold", DlibHogDetector(threshold=0.0, rotation_fallback=False)),
        ("service_settings", DlibHogDetector()),
    ):
        started, found = time.perf_counter(), []
        for image in tqdm(photos, desc=name, unit="photo", leave=False):
            found.append(detector.detect(image))
        ms = (time.perf_counter() - started) / len(photos) * 1000
        false = sum(len(detector.detect(image)) for image in negatives)
        results[name] = {
            "photos_with_face": sum(bool(f) for f in found),
            "photos": len(photos),
            "ms_per_photo": ms,
            "false_faces_on_faceless": false,
            "faceless_images": len(negatives),
        }
        service_faces = found
    return results, service_faces


def end_to_end(photos, labels, faces, model: str, margin: float | None) -> tuple[dict, list[str]]:
    """The largest face of each labelled photo through the Predictor; ``margin`` overrides the crop margin."""
    entry = find(model)
    spec = entry.manifest.input if margin is None else entry.manifest.input.model_copy(update={"face_margin": margin})
    predictor, known = Predictor.load(entry), entry.manifest.labels
    crops, targets = [], []
    for image, label, found in zip(photos, labels, faces, strict=True):
        if found and label in known:
            crops.append(crop_face(image, found[0].box, spec))
            targets.append(known.index(label))
    logits = predictor.predict(crops).logits
    metrics = classification_metrics(logits, np.array(targets), known, entry.manifest.calibration_temperature)
    return {**metrics, "face_margin": spec.face_margin}, known


def main(args: argparse.Namespace) -> dict:
    with open(PHOTOS / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    photos = [cv2.imread(str(PHOTOS / "images" / r["image"])) for r in rows]
    labels = [canonical_label(r["label"]) for r in rows]
    detection, faces = detection_report(photos, faceless_images(args.negatives))
    for name, r in detection.items():
        print(
            f"detector {name}: face in {r['photos_with_face']}/{r['photos']} photos, {r['ms_per_photo']:.1f} ms/photo, "
            f"{r['false_faces_on_faceless']} false faces on {r['faceless_images']} faceless images"
        )
    metrics, known = end_to_end(photos, labels, faces, args.model, None)
    write_report(args.output, "photos", {**metrics, "detection": detection}, known)
    print(
        f"end to end ({metrics['samples']} photos with a face and a model label): accuracy {metrics['accuracy']:.3f}, "
        f"macro-F1 {metrics['macro_f1']:.3f}"
    )
    for label, r in metrics["per_class"].items():
        print(f"  {label:9s} recall {r['recall']:.2f}  precision {r['precision']:.2f}  (n={r['support']})")
    sweep = {m: end_to_end(photos, labels, faces, args.model, m)[0] for m in args.margins}
    for m, r in sweep.items():
        print(f"  margin {m:.2f}: accuracy {r['accuracy']:.3f} macro-F1 {r['macro_f1']:.3f}")
    summary = {
        "detection": detection,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "margin_sweep": {str(m): {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for m, r in sweep.items()},
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
