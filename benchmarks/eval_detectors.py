"""Detector backends compared on ``shared/data/photos``: recall (photos with >= 1 face), ms per image, false faces.

For each backend (default settings, one detection at a time): the share of the labelled photos in which it finds
at least one face, overall and per photo label (and counting photos no larger than the service's whole-image
fallback size as found, as the service does); ms per image (median and mean, the detect call alone, photo
decoding excluded; also on the faceless images, where a fallback pays most); faces it finds in generated
faceless images (``eval_photos.faceless_images``); and, on the photos the first backend (``dlib-hog``) misses,
what each other one finds. Writes ``detectors.json`` and, when matplotlib is importable, ``detectors.png``.

    python -m benchmarks.eval_detectors [--output runs/eval_detectors] [--detectors dlib-hog dlib-cnn] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks import save_report
from benchmarks.eval_photos import PHOTOS, faceless_images
from service.config import DetectorSettings
from service.detection import DETECTORS, FaceDetector, create_detector


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("runs/eval_detectors"))
    p.add_argument("--photos", type=Path, default=PHOTOS, help="folder with labels.csv and images/")
    p.add_argument("--detectors", nargs="+", default=["dlib-hog", "dlib-cnn", "dlib-hog-cnn"], choices=list(DETECTORS))
    p.add_argument("--negatives", type=int, default=200, help="generated faceless images")
    p.add_argument("--limit", type=int, default=0, help="first N photos only (0 = all)")
    return p


def load_photos(root: Path, limit: int) -> tuple[list[str], list[str], list[np.ndarray]]:
    with (root / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))[: limit or None]
    images = [cv2.imread(str(root / "images" / r["image"])) for r in tqdm(rows, desc="reading photos", leave=False)]
    return [r["image"] for r in rows], [r["label"] for r in rows], images


def timed_counts(detector: FaceDetector, images: list[np.ndarray], desc: str) -> tuple[list[int], list[float]]:
    """Faces found and ms per image."""
    counts, ms = [], []
    for image in tqdm(images, desc=desc, unit="img", leave=False):
        started = time.perf_counter()
        counts.append(len(detector.detect(image)))
        ms.append((time.perf_counter() - started) * 1000)
    return counts, ms


def summarize(labels: list[str], counts: list[int], ms: list[float], negatives: list[int], small: list[bool]) -> dict:
    """``small``: photos the service would take whole as one face crop when no face is found in them."""
    per_label: dict[str, list[int]] = defaultdict(list)
    for label, n in zip(labels, counts, strict=True):
        per_label[label].append(n > 0)
    return {
        "photos": len(counts),
        "recall": round(sum(n > 0 for n in counts) / len(counts), 4),
        "recall_with_whole_image_fallback": round(
            sum(n > 0 or s for n, s in zip(counts, small, strict=True)) / len(counts), 4
        ),
        "recall_per_label": {k: round(sum(v) / len(v), 3) for k, v in sorted(per_label.items())},
        "ms_median": round(statistics.median(ms), 1),
        "ms_mean": round(statistics.fmean(ms), 1),
        "faceless_images": len(negatives),
        "false_faces": sum(negatives),
        "faceless_images_with_a_face": sum(n > 0 for n in negatives),
    }


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.bar(names, [100 * results[n]["recall"] for n in names])
    left.set(ylabel="% photos with >= 1 face", ylim=(80, 100), title=f"recall, {results[names[0]]['photos']} photos")
    right.bar(names, [results[n]["ms_mean"] for n in names])
    right.set(ylabel="ms per photo (mean, log scale)", yscale="log", title="cost")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    names, labels, photos = load_photos(args.photos, args.limit)
    negatives = faceless_images(args.negatives)
    fallback_side = DetectorSettings().whole_image_fallback_max_side
    small = [max(image.shape[:2]) <= fallback_side for image in photos]
    results, found = {}, {}
    for backend in args.detectors:
        detector = create_detector(DetectorSettings(backend=backend))
        counts, ms = timed_counts(detector, photos, backend)
        false, false_ms = timed_counts(detector, negatives, f"{backend} faceless")
        results[backend], found[backend] = summarize(labels, counts, ms, false, small), counts
        results[backend]["faceless_ms_median"] = round(statistics.median(false_ms), 1) if false_ms else None
        print(backend, json.dumps(results[backend]))
    base = args.detectors[0]
    missed = [i for i, n in enumerate(found[base]) if n == 0]
    report = {
        "detectors": results,
        f"photos_{base}_misses": {
            "count": len(missed),
            "images": [f"{names[i]} ({labels[i]})" for i in missed],
            "found_by": {b: sum(found[b][i] > 0 for i in missed) for b in args.detectors[1:]},
            "small_enough_for_the_whole_image_fallback": sum(small[i] for i in missed),
        },
        "misses": {b: [names[i] for i, n in enumerate(found[b]) if n == 0] for b in args.detectors},
    }
    save_report(args.output, "detectors", report, lambda path: plot(results, path))
    print(json.dumps(report[f"photos_{base}_misses"]["found_by"]), "of", len(missed), f"photos {base} misses")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
