"""Cut detection and the picture check under tracks (``service/video/shots.py``), measured on the shared photos.

1. Frame-wide share of new blocks, and the share of a face's box on new blocks, for pairs of photos of different
   people (a hard cut: filling the frame, or pasted in the same place of a static 640 x 480 backdrop) and for the same
   photo moved, shaken, zoomed, relit, tilted or nearer (no cut).
2. The cost per sampled frame on 1280 x 720 frames: thumbnail, comparison, and the check of one track.
3. With ``--scan``: the video pipeline's scan of ``bench_video``'s clip (no model), detection on and off alternately,
   ``--pairs`` times: the scan thread's CPU seconds and step time per sample.
4. With ``--video``: ``bench_video``'s clip through the service with detection on and off, back to back, ``--pairs``
   times (wall seconds; the naive baseline is not run).

    python -m benchmarks.shot_cuts [--pairs-of-photos 40] [--scan] [--video] [--seconds 10 --pairs 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.synth import background, paste
from service.video.shots import (
    DEFAULT_THRESHOLD,
    REGION_CHANGE,
    PictureContinuity,
    ShotDetector,
    box_share,
    new_blocks,
    thumbnail,
)

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "images"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs-of-photos", type=int, default=40)
    p.add_argument("--scan", action="store_true", help="also time the scan of bench_video's clip, on and off")
    p.add_argument("--video", action="store_true", help="also time bench_video's clip with detection on and off")
    p.add_argument("--seconds", type=float, default=10.0, help="length of that clip")
    p.add_argument("--pairs", type=int, default=2, help="on/off runs back to back")
    p.add_argument("--json", type=Path)
    return p


def scene(photo: np.ndarray, x: int, y: int, size: int, backdrop: np.ndarray) -> np.ndarray:
    frame = backdrop.copy()
    paste(frame, cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA), x, y)
    return frame


def scenarios(photos: list[np.ndarray], pairs: int) -> dict[str, list[tuple[np.ndarray, np.ndarray, tuple]]]:
    """Name -> (before, after, the face's box in after): cuts first, then what must not be one."""
    rng, backdrop = random.Random(0), background(640, 480)
    out: dict[str, list] = {}
    for _ in range(pairs):
        a, b = rng.sample(photos, 2)
        face = (150 + 62, 80 + 50, 125, 150)  # the middle of a 250 px photo at (150, 80)
        out.setdefault("cut: full frame (300 px photos)", []).append(
            (cv2.resize(a, (300, 300)), cv2.resize(b, (300, 300)), (50, 50, 200, 200))
        )
        out.setdefault("cut: 250 px photo in place", []).append(
            (scene(a, 150, 80, 250, backdrop), scene(b, 150, 80, 250, backdrop), face)
        )
        still = scene(a, 150, 80, 250, backdrop)
        for step in (12, 30):
            moved = (face[0] + step, face[1] + step // 3, face[2], face[3])
            out.setdefault(f"no cut: moved {step} px", []).append(
                (still, scene(a, 150 + step, 80 + step // 3, 250, backdrop), moved)
            )
        out.setdefault("no cut: 4 px shake", []).append((still, np.roll(still, (4, -3), (0, 1)), face))
        out.setdefault("no cut: 4% zoom", []).append(
            (still, cv2.resize(still, None, fx=1.04, fy=1.04)[:480, :640], face)
        )
        relit = np.clip(still * 0.85 + 5, 0, 255).astype(np.uint8)
        out.setdefault("no cut: 15% darker", []).append((still, relit, face))
        tilted = cv2.warpAffine(
            cv2.resize(a, (250, 250)),
            cv2.getRotationMatrix2D((125, 125), 10, 1),
            (250, 250),
            borderMode=cv2.BORDER_REFLECT,
        )
        out.setdefault("no cut: head tilted 10 degrees", []).append(
            (still, scene(tilted, 150, 80, 250, backdrop), face)
        )
        nearer = cv2.resize(cv2.resize(a, (250, 250)), (300, 300))[25:275, 25:275]
        out.setdefault("no cut: 20% nearer", []).append((still, scene(nearer, 150, 80, 250, backdrop), face))
    return out


def measure_scenarios(photos: list[np.ndarray], pairs: int) -> dict:
    table = {}
    for name, cases in scenarios(photos, pairs).items():
        frame_shares, box_shares = [], []
        for before, after, box in cases:
            new = new_blocks(thumbnail(before), thumbnail(after))
            frame_shares.append(float(new.mean()))
            box_shares.append(box_share(new, box, after.shape))
        f, b = np.array(frame_shares), np.array(box_shares)
        table[name] = {
            "pairs": len(cases),
            "frame_share_min_median_max": [round(float(v), 3) for v in (f.min(), np.median(f), f.max())],
            "frame_cuts": int((f >= DEFAULT_THRESHOLD).sum()),
            "face_replaced": int((b >= REGION_CHANGE).sum()),
            "either": int(((f >= DEFAULT_THRESHOLD) | (b >= REGION_CHANGE)).sum()),
        }
        print(f"{name:34s} {table[name]}")
    return table


def measure_cost(photos: list[np.ndarray], repeats: int = 100) -> dict:
    """Milliseconds per sampled 1280 x 720 frame, interleaved so that they share the machine's load: the cut test
    (thumbnail and comparison), the same with one live track checked, and the pipeline's whole-frame detection pass
    (the service's detector), for scale."""
    from benchmarks import service_settings
    from service.detection import create_detector
    from service.options import resolve_options
    from service.video.regions import FrameDetector

    settings = service_settings()
    finder = FrameDetector(create_detector(settings.detector), resolve_options(settings))
    backdrop = background(1280, 720)
    frames = [scene(photos[i % len(photos)], 400 + 3 * i, 150, 350, backdrop) for i in range(8)]
    shots = ShotDetector()
    continuity = PictureContinuity(shots)
    spent = {"cut_test_ms": 0.0, "cut_test_and_one_track_ms": 0.0, "whole_frame_detection_ms": 0.0}
    for i in range(repeats):
        frame = frames[i % len(frames)]
        started = time.perf_counter()
        shots.is_cut(frame)
        spent["cut_test_ms"] += time.perf_counter() - started
        started = time.perf_counter()
        shots.is_cut(frame)
        continuity.same_person(1, frame, (450, 200, 200, 240))
        continuity.observed(1, frame, (450, 200, 200, 240))
        spent["cut_test_and_one_track_ms"] += time.perf_counter() - started
        started = time.perf_counter()
        finder.detect(frame, 0, [])
        spent["whole_frame_detection_ms"] += time.perf_counter() - started
    result = {name: seconds / repeats * 1000 for name, seconds in spent.items()}
    print({k: round(v, 3) for k, v in result.items()})
    return result


def measure_video(seconds: float, pairs: int) -> dict:
    """bench_video's clip and request, with EMOTION_VIDEO__SHOT_CUTS on and off, back to back."""
    from benchmarks.bench_video import make_clip, run_service

    runs: dict[str, list[float]] = {"on": [], "off": []}
    bodies = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "bench.mp4", seconds)
        for _ in range(pairs):
            for mode in ("on", "off"):
                os.environ["EMOTION_VIDEO__SHOT_CUTS"] = "true" if mode == "on" else "false"
                bodies[mode], wall = run_service(clip, 5.0)
                runs[mode].append(wall)
        os.environ.pop("EMOTION_VIDEO__SHOT_CUTS", None)
    result = {
        "wall_s": runs,
        "tracks": {m: len(b["tracks"]) for m, b in bodies.items()},
        "detection": {m: b["detection"] for m, b in bodies.items()},
        "detect_s": {m: b["timings"]["detect"] for m, b in bodies.items()},
    }
    print(json.dumps(result, indent=1))
    return result


def measure_scan(seconds: float, pairs: int) -> dict:
    """bench_video's clip through the video pipeline's scan alone (decode, detect, track, crop; no model), cut
    detection on and off alternately: the scan thread's CPU seconds (``thread_time``, which another process's load
    disturbs less than wall time) and its per-sample step time."""
    from dataclasses import replace

    from benchmarks import find_entry, service_settings
    from benchmarks.bench_video import make_clip
    from model_store import Predictor
    from service.detection import create_detector
    from service.options import resolve_options
    from service.pipelines.video import FaceStep, VideoPipeline

    settings = service_settings()
    detector = create_detector(settings.detector)
    spec = Predictor.load(find_entry(settings.default_model)).image_spec
    pipeline, on = VideoPipeline(detector), resolve_options(settings)
    modes = {"on": on, "off": replace(on, cut_threshold=None)}
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        clip = str(make_clip(Path(tmp) / "bench.mp4", seconds))
        for _ in range(pairs):
            for mode, opts in modes.items():
                step = FaceStep(detector, pipeline.cropper, spec, opts)
                cpu, wall = time.thread_time(), time.perf_counter()
                scan = pipeline.scan(clip, step, opts)
                runs[mode].append(
                    {
                        "scan_cpu_s": time.thread_time() - cpu,
                        "scan_wall_s": time.perf_counter() - wall,
                        "step_ms_per_sample": scan.detect_seconds / scan.frames_analyzed * 1000,
                        "tracks": len({s.track_id for s in scan.samples}),
                        "detection": scan.detection_counts,
                    }
                )
    print(json.dumps(runs, indent=1))
    return runs


def main(args: argparse.Namespace) -> dict:
    photos = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    photos = [p for p in photos if p is not None and min(p.shape[:2]) >= 200]
    result = {
        "scenarios": measure_scenarios(photos, args.pairs_of_photos),
        "cost": measure_cost(photos),
    }
    if args.scan:
        result["scan"] = measure_scan(args.seconds, args.pairs)
    if args.video:
        result["video"] = measure_video(args.seconds, args.pairs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
