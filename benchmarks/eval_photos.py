"""Real-photo evaluation on ``shared/data/photos``: face detection and end-to-end expression accuracy.

1. Detection: photos in which the detector finds at least one face, ms per photo, and false faces on generated
   faceless images, for dlib's default threshold and the service's settings.
2. End to end: the largest detected face of each photo through the default model (service preprocessing, crop
   margin, mirror TTA, calibration) against the photo's hand label (noisy; ``contempt`` has no model class and is
   left out). Writes ``photos.json``, ``photos_per_class.json`` and ``photos_confusion.png``. Balanced accuracy is
   the mean recall over the labels with at least ``--min-support`` photos (fear has none in this set).
3. With ``--align``: the same faces cut as eye-levelled crops (``service.detection.align``), same model, so the
   effect of alignment alone is one line apart.

    python -m benchmarks.eval_photos [--output runs/eval_photos] [--version V] [--align] [--margins 0.0 0.1 0.2]
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

from benchmarks import add_model_argument, find_entry, served_predictor, service_settings
from service.detection import DlibHogDetector, FaceDetector, close_up_faces, create_detector, whole_image_if_small
from service.detection.align import FaceCropper
from service.detection.bars import Picture
from training.calibration import cross_validated, fit_logit_bias
from training.data import canonical_label
from training.reports import classification_metrics, write_report

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("runs/eval_photos"))
    add_model_argument(p)
    p.add_argument("--version", help="model version (default: the newest, what the service serves)")
    p.add_argument("--align", action="store_true", help="also score eye-levelled crops of the same faces")
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="score only photos the detector finds a face in (default: as the service, a small photo with none "
        "found is one face crop)",
    )
    p.add_argument("--fit-bias", type=Path, help="fit a per-label logit bias on the photos into this JSON file")
    p.add_argument("--min-support", type=int, default=100, help="labels counted in the balanced accuracy")
    p.add_argument("--margins", type=float, nargs="*", default=[], help="also score these crop margins")
    p.add_argument("--negatives", type=int, default=200)
    p.add_argument("--detector", help="detector backend (default: the service's, EMOTION_DETECTOR__BACKEND)")
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


def service_detector(backend: str | None = None) -> FaceDetector:
    """The detector the service runs with its settings (``backend`` instead of the configured one when given)."""
    settings = service_settings().detector  # the environment's, as the service reads them
    return create_detector(settings.model_copy(update={"backend": backend}) if backend else settings)


def detection_report(
    photos: list[np.ndarray], negatives: list[np.ndarray], detector: FaceDetector
) -> tuple[dict, list]:
    results, service_faces = {}, []
    for name, candidate in (
        ("dlib_default_threshold", DlibHogDetector(threshold=0.0, rotation_fallback=False)),
        ("service_settings", detector),
    ):
        started, found = time.perf_counter(), []
        for image in tqdm(photos, desc=name, unit="photo", leave=False):
            found.append(candidate.detect(image))
        ms = (time.perf_counter() - started) / len(photos) * 1000
        false = sum(len(candidate.detect(image)) for image in negatives)
        results[name] = {
            "photos_with_face": sum(bool(f) for f in found),
            "photos": len(photos),
            "ms_per_photo": ms,
            "false_faces_on_faceless": false,
            "faceless_images": len(negatives),
        }
        service_faces = found
    return results, service_faces


def service_fallbacks(
    photos: list[np.ndarray], faces: list, detection: dict, detector: FaceDetector | None = None
) -> list:
    """What the face pipeline does when the detector finds nothing: a padded second scan (faces that fill the
    photo), then a small photo taken whole; each step's count goes into ``detection``."""
    settings, detector = service_settings().detector, detector or service_detector()
    started, retried = time.perf_counter(), sum(not f for f in faces)
    faces = [
        f or close_up_faces(detector, image, settings.close_up_padding) for image, f in zip(photos, faces, strict=True)
    ]
    ms = (time.perf_counter() - started) / max(retried, 1) * 1000
    found = sum(bool(f) for f in faces)
    detection["service_with_close_up_retry"] = {"photos_with_face": found, "photos": len(photos), "ms_per_retry": ms}
    print(f"with the padded second scan (+{settings.close_up_padding:.2f}): a face in {found} photos, {ms:.1f} ms each")
    max_side = settings.whole_image_fallback_max_side
    faces = [whole_image_if_small(image, found, max_side) for image, found in zip(photos, faces, strict=True)]
    detection["service_with_fallback"] = {"photos_with_face": sum(bool(f) for f in faces), "photos": len(photos)}
    print(f"and the whole-image fallback (<= {max_side} px): a face for {sum(bool(f) for f in faces)} photos")
    return faces


def balanced_accuracy(metrics: dict, min_support: int) -> tuple[float, list[str]]:
    """Mean recall over the labels with at least ``min_support`` samples (and those labels)."""
    counted = [k for k, r in metrics["per_class"].items() if r["support"] >= min_support]
    return float(np.mean([metrics["per_class"][k]["recall"] for k in counted])), counted


def read_photos() -> tuple[list[np.ndarray], list[str]]:
    """The shared photos (BGR) and their hand labels in the models' label names."""
    with open(PHOTOS / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [cv2.imread(str(PHOTOS / "images" / r["image"])) for r in rows], [canonical_label(r["label"]) for r in rows]


def inside_bars(photos: list[np.ndarray]) -> list[np.ndarray]:
    """Each photo's picture inside its flat bars (a view), where the service finds and cuts its faces
    (``EMOTION_DETECTOR__FIND_BARS``; none of the 900 shared photos has a pair of bars)."""
    find_bars = service_settings().detector.find_bars
    return [Picture.of(image, find_bars).view for image in photos]


def largest_face_crops(photos, labels, faces, spec, known: list[str], cropper=None) -> tuple[list, np.ndarray]:
    """The largest face of each photo with a label in ``known``, cut as the service's face pipeline cuts it
    (``cropper``, default ``FaceCropper()``: the model's framing), and the label indices."""
    cropper = cropper or FaceCropper()
    crops, targets = [], []
    for image, label, found in zip(photos, labels, faces, strict=True):
        if found and label in known:
            crops.append(cropper.crop(image, found[0].box, spec))
            targets.append(known.index(label))
    return crops, np.array(targets)


def photo_logits(photos, labels, faces, args, margin: float | None, aligner=None):
    """Logits of the largest face of each labelled photo through the Predictor, the targets, and the entry."""
    entry = find_entry(args.model, args.version)
    spec = entry.manifest.input if margin is None else entry.manifest.input.model_copy(update={"face_margin": margin})
    crops, targets = largest_face_crops(photos, labels, faces, spec, entry.manifest.labels, aligner)
    return served_predictor(entry).predict(crops).logits, targets, entry


def scored(logits, targets, entry, args, **extra) -> dict:
    metrics = classification_metrics(logits, targets, entry.manifest.labels, entry.manifest.calibration_temperature)
    bal, counted = balanced_accuracy(metrics, args.min_support)
    return {**metrics, "balanced_accuracy": bal, "balanced_over": counted, "version": entry.manifest.version, **extra}


def end_to_end(photos, labels, faces, args, margin: float | None, aligner=None) -> tuple[dict, list[str]]:
    """The largest face of each labelled photo through the Predictor; ``margin`` overrides the crop margin."""
    logits, targets, entry = photo_logits(photos, labels, faces, args, margin, aligner)
    margin = entry.manifest.input.face_margin if margin is None else margin
    return scored(logits, targets, entry, args, aligned=aligner is not None, face_margin=margin), entry.manifest.labels


def fit_bias(logits, targets, entry, args) -> dict:
    """A per-label logit bias fitted on all the photos (written to ``--fit-bias``), and what it does on photos it
    was not fitted on (5-fold cross-validation)."""
    temperature, known = entry.manifest.calibration_temperature, entry.manifest.labels
    bias = fit_logit_bias(logits, targets, temperature)
    args.fit_bias.write_text(json.dumps({k: round(float(b), 4) for k, b in zip(known, bias, strict=True)}, indent=2))
    held_out = scored(cross_validated(logits, targets, temperature), targets, entry, args, cross_validated=True)
    print_metrics(f"with a logit bias, 5-fold cross-validated (bias fitted on all -> {args.fit_bias})", held_out)
    return held_out


def brief(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    recall = {k: r["recall"] for k, r in metrics["per_class"].items()}
    return {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")} | {"per_class_recall": recall}


def print_metrics(title: str, metrics: dict) -> None:
    print(
        f"{title} ({metrics['samples']} photos with a face and a model label): accuracy {metrics['accuracy']:.3f}, "
        f"balanced accuracy {metrics['balanced_accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
    )
    for label, r in metrics["per_class"].items():
        print(f"  {label:9s} recall {r['recall']:.2f}  precision {r['precision']:.2f}  (n={r['support']})")


def main(args: argparse.Namespace) -> dict:
    photos, labels = read_photos()
    photos = inside_bars(photos)
    detector = service_detector(args.detector)
    detection, faces = detection_report(photos, faceless_images(args.negatives), detector)
    for name, r in detection.items():
        print(
            f"detector {name}: face in {r['photos_with_face']}/{r['photos']} photos, {r['ms_per_photo']:.1f} ms/photo, "
            f"{r['false_faces_on_faceless']} false faces on {r['faceless_images']} faceless images"
        )
    if not args.no_fallback:
        faces = service_fallbacks(photos, faces, detection, detector)
    logits, targets, entry = photo_logits(photos, labels, faces, args, None)
    known = entry.manifest.labels
    metrics = scored(logits, targets, entry, args, aligned=False, face_margin=entry.manifest.input.face_margin)
    write_report(args.output, "photos", {**metrics, "detection": detection}, known)
    print_metrics(f"end to end, {args.model} {metrics['version']}", metrics)
    aligned = None
    if args.align:
        aligned, _ = end_to_end(photos, labels, faces, args, None, FaceCropper(level=True))
        write_report(args.output, "photos_aligned", aligned, known)
        print_metrics("the same faces, eye-levelled crops", aligned)
    biased = fit_bias(logits, targets, entry, args) if args.fit_bias else None
    sweep = {m: end_to_end(photos, labels, faces, args, m)[0] for m in args.margins}
    for m, r in sweep.items():
        print(f"  margin {m:.2f}: accuracy {r['accuracy']:.3f} macro-F1 {r['macro_f1']:.3f}")
    summary = {
        "detection": detection,
        **brief(metrics),
        "aligned": brief(aligned),
        "logit_bias_cross_validated": brief(biased),
        "margin_sweep": {str(m): {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for m, r in sweep.items()},
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
