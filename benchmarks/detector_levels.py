"""RetinaFace with and without its stride-8 level (the only one that finds faces under about 56 px of the scan):
what that level finds and what it costs, the figures behind ``LARGE_LEVELS_FROM`` and ``small_faces``.

* cost: ms per scan (``RetinaFaceDetector.scan``: the input blob, the onnxruntime call, decoding and NMS) of a video
  region (211 x 211), a photo (320 x 240) and a 720p frame's pass (640 x 360, on one and on two threads), the two
  graphs alternated call by call;
* small faces: faces of the shared photos shrunk onto a 320 x 240 gray canvas, 24 to 96 px, found by each graph;
* the photos: every shared photo scanned as the service scans it (320 px), the boxes of each graph compared;
* video: ``bench_video``'s clip, its whole-frame passes at 640 px and the regions around the faces they find.

Writes ``detector_levels.json`` and ``detector_levels.png``.

    python -m benchmarks.detector_levels [--output runs/detector_levels] [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks import pyplot, save_report, service_settings
from benchmarks.bench_video import make_clip
from benchmarks.eval_photos import PHOTOS
from service.detection.retinaface import RetinaFaceDetector, RetinaFaceSettings
from service.detection.scaling import rescaled
from service.options import resolve_options
from service.tracking import iou
from service.video.decode import FrameSampler, Sampling
from service.video.regions import FrameDetector

SIZES = (24, 32, 40, 48, 56, 64, 80, 96)
SHAPES = {"region 211x211": (211, 211), "photo 320x240": (240, 320), "720p pass 640x360": (360, 640)}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("runs/detector_levels"))
    p.add_argument("--limit", type=int, default=0, help="first N photos only (0 = all)")
    p.add_argument("--calls", type=int, default=60, help="timed scans per graph and input")
    p.add_argument("--canvas-faces", type=int, default=30, help="photo faces per size on the canvas")
    p.add_argument("--clip-seconds", type=float, default=30.0, help="length of bench_video's clip")
    return p


def boxes(detector: RetinaFaceDetector, image: np.ndarray, small_faces: bool) -> list[tuple[float, ...]]:
    found, _, _ = detector.scan(image, small_faces)
    return [tuple(float(v) for v in (x0, y0, x1 - x0, y1 - y0)) for x0, y0, x1, y1 in found]


def agreement(detector: RetinaFaceDetector, scans: list[np.ndarray], desc: str) -> dict:
    """Boxes of each scan with and without the level: how many, how many scans differ, the worst IoU of a box with
    its best match."""
    whole_n = cut_n = differ = 0
    worst = 1.0
    for image in tqdm(scans, desc=desc, leave=False):
        whole, cut = boxes(detector, image, True), boxes(detector, image, False)
        whole_n, cut_n, differ = whole_n + len(whole), cut_n + len(cut), differ + (len(whole) != len(cut))
        for box in whole:
            worst = min(worst, max((iou(box, other) for other in cut), default=0.0))
    return {
        "scans": len(scans),
        "boxes_whole": whole_n,
        "boxes_cut": cut_n,
        "scans_differing": differ,
        "worst_iou": worst,
    }


def cost(calls: int) -> dict:
    """Median ms per scan, whole graph and cut, alternated call by call; the 720p pass on one thread and on two."""
    rng = np.random.default_rng(0)
    out = {}
    for threads in (1, 2):
        detector = RetinaFaceDetector(RetinaFaceSettings(large_scan_threads=threads))
        for name, (h, w) in SHAPES.items():
            if threads == 2 and h * w < detector.settings.large_scan_pixels:
                continue
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            times: dict[bool, list[float]] = {True: [], False: []}
            for i in range(calls + 5):
                for small in (True, False):
                    started = time.perf_counter()
                    detector.scan(image, small)
                    if i >= 5:  # warm-up calls
                        times[small].append((time.perf_counter() - started) * 1000)
            key = f"{name}, {threads} thread{'s' * (threads > 1)}"
            out[key] = {"whole_ms": statistics.median(times[True]), "cut_ms": statistics.median(times[False])}
    return out


def canvas_faces(detector: RetinaFaceDetector, photos: list[np.ndarray], n: int) -> dict:
    """For each size, how many of ``n`` photo faces shrunk to it on a 320 x 240 canvas each graph finds."""
    faces = [(photo, found[0]) for photo in photos if (found := detector.detect(photo))][::30][:n]
    out = {}
    for side in tqdm(SIZES, desc="canvas sizes", leave=False):
        hits = {True: 0, False: 0}
        for photo, face in faces:
            scale = side / face.width
            small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            x, y = round(face.x * scale), round(face.y * scale)
            patch = small[max(0, y - side) : y + 2 * side, max(0, x - side) : x + 2 * side][:180, :240]
            canvas = np.full((240, 320, 3), 128, np.uint8)
            canvas[60 : 60 + patch.shape[0], 80 : 80 + patch.shape[1]] = patch
            truth = (80 + x - max(0, x - side), 60 + y - max(0, y - side), side, side)
            for small_faces in hits:
                hits[small_faces] += any(iou(b, truth) > 0.3 for b in boxes(detector, canvas, small_faces))
        out[side] = {"faces": len(faces), "whole": hits[True], "cut": hits[False]}
    return out


def video_scans(detector: RetinaFaceDetector, seconds: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``bench_video``'s clip as the video pipeline scans it (``FrameDetector``, the service's options): each
    sampled frame's whole-frame pass (640 px), and the region around each face that pass finds."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", seconds)
        frames = [frame for _, _, frame in FrameSampler(str(clip), Sampling(5.0))]  # bench_video's samples
    finder = FrameDetector(detector, resolve_options(service_settings()))
    passes, regions = [], []
    for frame in tqdm(frames, desc="video regions", leave=False):
        min_face = finder.full_frame_min_face(frame)
        passes.append(rescaled(frame, detector.scale_for(*frame.shape[:2], min_face)))
        regions += [finder.region(frame, face.box)[0] for face in detector.detect(frame, min_face)]
    return passes, regions


def plot(result: dict, path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(result["cost"])
    at = np.arange(len(names))
    left.barh(at + 0.2, [result["cost"][n]["whole_ms"] for n in names], 0.4, label="whole graph")
    left.barh(at - 0.2, [result["cost"][n]["cut_ms"] for n in names], 0.4, label="without stride 8")
    left.set_yticks(at, names)
    left.set_xlabel("ms per scan (median)")
    left.legend()
    sizes = list(result["canvas"])
    for key, label in (("whole", "whole graph"), ("cut", "without stride 8")):
        right.plot(sizes, [result["canvas"][s][key] / result["canvas"][s]["faces"] for s in sizes], "o-", label=label)
    right.set_xlabel("face size in the scan (px)")
    right.set_ylabel("share of canvas faces found")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(args: argparse.Namespace) -> dict:
    detector = RetinaFaceDetector()
    paths = sorted((PHOTOS / "images").glob("*.jpg"))[: args.limit or None]
    photos = [cv2.imread(str(p)) for p in tqdm(paths, desc="reading photos", leave=False)]
    scans = [rescaled(photo, detector.scale_for(*photo.shape[:2])) for photo in photos]  # as photos are scanned
    passes, regions = video_scans(detector, args.clip_seconds)
    result = {
        "cost": cost(args.calls),
        "canvas": canvas_faces(detector, photos, args.canvas_faces),
        "photos": agreement(detector, scans, "photos"),
        "video_passes": agreement(detector, passes, "video passes"),
        "video_regions": agreement(detector, regions, "video regions"),
    }
    for name, c in result["cost"].items():
        print(
            f"{name:32s} whole {c['whole_ms']:6.2f} ms  cut {c['cut_ms']:6.2f} ms  ({c['cut_ms'] / c['whole_ms']:.2f}x)"
        )
    print(
        "canvas faces found, whole / cut: "
        + ", ".join(f"{s} px {c['whole']}/{c['cut']}" for s, c in result["canvas"].items())
    )
    for key in ("photos", "video_passes", "video_regions"):
        print(f"{key:14s} {result[key]}")
    save_report(args.output, "detector_levels", result, lambda path: plot(result, path))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
