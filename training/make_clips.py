"""Build a clip dataset from still faces: ``python -m training.make_clips --source DIR --output runs/clips``.

No labelled video set ships with this project, so each clip is one real face image animated with a smooth
random head motion (drift, zoom, small rotation, brightness change) and written as an MP4. The result is a
``manifest.csv`` (``path,label,split``) that ``training.train`` reads like any real clip manifest. These clips
test the clip pipeline end to end; they carry no real facial dynamics, and models trained on them say so.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from training.data import read_image_folder

log = logging.getLogger("training.make_clips")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", type=Path, required=True, help="ImageFolder root with train/ and val/ (e.g. FER2013)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--per-class", type=int, default=40, help="clips per label and split")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def animate(face: np.ndarray, frames: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Smooth random similarity transforms of one face, as a frame sequence."""
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
    start, stop = rng.uniform(-1, 1, (2, 5)) * [0.06 * size, 0.06 * size, 0.06, 8.0, 20.0]
    out = []
    for k in range(frames):
        dx, dy, zoom, angle, light = start + (stop - start) * (k / max(1, frames - 1))
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0 + zoom)
        matrix[:, 2] += (dx, dy)
        frame = cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip(frame.astype(np.float32) + light, 0, 255).astype(np.uint8))
    return out


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)
    writer.release()


def main(args: argparse.Namespace) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    rng = np.random.default_rng(args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in ("train", "val"):
        samples = read_image_folder(args.source, split)
        by_label: dict[str, list] = {}
        for s in samples:
            by_label.setdefault(s.label, []).append(s)
        jobs = [
            (label, s)
            for label, items in sorted(by_label.items())
            for s in rng.permutation(np.array(items, dtype=object))[: args.per_class]
        ]
        (args.output / split).mkdir(exist_ok=True)
        for i, (label, sample) in enumerate(tqdm(jobs, desc=f"clips {split}", unit="clip")):
            face = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
            path = args.output / split / f"{label}_{i:05d}.mp4"
            write_mp4(path, animate(face, args.frames, args.size, rng), args.fps)
            rows.append((path.relative_to(args.output).as_posix(), label, split))
    manifest = args.output / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "split"), *rows])
    log.info("wrote %d clips and %s", len(rows), manifest)
    return manifest


if __name__ == "__main__":
    main(get_args_parser().parse_args())
