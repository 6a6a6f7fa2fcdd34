"""What putting off whole-frame passes over a still picture (``service.video.quiet``, ``EMOTION_VIDEO__QUIET_PASSES``)
saves and what it changes, on clips of the shared photos through ``POST /predict/video`` (the real pipeline).

Clips (``--seconds``, 30 by default; 1280 x 720, 30 fps, sampled at 5 a second, over a static textured backdrop
unless said otherwise):
- ``moving``: ``bench_video``'s clip, two people drifting across, faces changing every 5 s;
- ``sparse``: one person in the middle third only, nothing before or after;
- ``cuts``: a hard cut to another person every tenth of the clip (3 s), in the same place;
- ``arrival``: one person throughout, a second appearing beside them at 0.41 of the clip (12.3 s: between two
  scheduled passes);
- ``pan``: one person while the backdrop slides by 6 px a frame (a camera pan: nothing is still).

Each clip is analysed with the setting at 0 (``off``: every scheduled pass runs) and at the service's value, the two
interleaved over ``--rounds`` (one app each, warmed). Per setting: median wall and CPU, whole-frame passes run and
put off, regions searched; and against off: tracks, the largest gap between their first sightings, the share of
off's faces found (the same sample, a box overlapping it) and found with the same dominant label. Writes
``quiet_passes.json`` and ``quiet_passes.png``.

    python -m benchmarks.quiet_passes [--rounds 3] [--seconds 30] [--output runs/quiet_passes]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient
from tqdm import tqdm

from benchmarks import pyplot, save_report, service_settings
from benchmarks.bench_video import PHOTOS, make_clip, post_clip
from benchmarks.synth import Appearance, background, paste, write_clip
from service.main import create_app
from service.tracking import iou

FPS, SIZE, SAMPLE_FPS = 30, (1280, 720), 5


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=30.0, help="each clip's length (its events scale with it)")
    p.add_argument("--output", type=Path, default=Path("runs/quiet_passes"))
    return p


def faces(count: int) -> list[np.ndarray]:
    return [cv2.resize(cv2.imread(str(p)), (300, 300)) for p in sorted(PHOTOS.glob("*.jpg"))[: 2 * count : 2]]


def pan_clip(path: Path, face: np.ndarray, seconds: float) -> Path:
    """A face held still in the frame while the backdrop slides under it (a pan), 6 px a frame."""
    width, height = SIZE
    wide = background(width + int(6 * FPS * seconds) + 8, height, seed=3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    try:
        for i in range(int(FPS * seconds)):
            frame = np.ascontiguousarray(wide[:, 6 * i : 6 * i + width])
            paste(frame, face, 490, 200)
            writer.write(frame)
    finally:
        writer.release()
    return path


def clips(folder: Path, seconds: float) -> dict[str, Path]:
    people, third, shot = faces(10), seconds / 3, seconds / 10
    cuts = [Appearance(people[i], shot * i, shot * (i + 1), (490, 200)) for i in range(10)]
    late = 0.41 * seconds  # between two scheduled passes
    arrival = [Appearance(people[0], 0.0, seconds, (200, 200)), Appearance(people[1], late, seconds, (800, 200))]
    return {
        "moving": make_clip(folder / "moving.mp4", seconds),
        "sparse": write_clip(
            folder / "sparse.mp4", [Appearance(people[2], third, 2 * third, (490, 200))], seconds, FPS, SIZE
        ),
        "cuts": write_clip(folder / "cuts.mp4", cuts, seconds, FPS, SIZE),
        "arrival": write_clip(folder / "arrival.mp4", arrival, seconds, FPS, SIZE),
        "pan": pan_clip(folder / "pan.mp4", people[3], seconds),
    }


def samples(body: dict) -> dict[float, list[tuple[tuple[int, int, int, int], str]]]:
    """Each sample's faces by time: (box, dominant label)."""
    out: dict = {}
    for track in body["tracks"]:
        for point in track["timeline"]:
            box = point["box"]
            out.setdefault(point["t"], []).append(
                ((box["x"], box["y"], box["width"], box["height"]), point["dominant"])
            )
    return out


def compared(off: dict, on: dict) -> dict:
    """``on``'s tracks and faces against ``off``'s: a face of off's is matched by the same sample and a box that
    overlaps it (IoU at least 0.5)."""
    before, after = samples(off), samples(on)
    matched = same = 0
    for t, faces in before.items():
        for box, label in faces:
            twin = next((other for other in after.get(t, []) if iou(box, other[0]) >= 0.5), None)
            matched += twin is not None
            same += twin is not None and twin[1] == label
    first_off = sorted(tr["first_seen"] for tr in off["tracks"])
    first_on = sorted(tr["first_seen"] for tr in on["tracks"])
    total = sum(len(faces) for faces in before.values())
    return {
        "tracks": [len(first_off), len(first_on)],
        "faces": [total, sum(len(faces) for faces in after.values())],
        "faces_found_as_off": matched / total if total else 1.0,
        "labels_as_off": same / total if total else 1.0,
        "largest_first_seen_gap_s": max((abs(a - b) for a, b in zip(first_off, first_on, strict=False)), default=0.0),
    }


def run(paths: dict[str, Path], settings: dict, rounds: int, seconds: float) -> dict:
    apps = {
        name: TestClient(create_app(service_settings().model_copy(update={"video": video})))
        for name, video in settings.items()
    }
    warm = cv2.imencode(".jpg", faces(1)[0])[1].tobytes()
    measured: dict = {clip: {name: [] for name in settings} for clip in paths}
    bodies: dict = {clip: {} for clip in paths}
    try:
        for client in apps.values():
            client.__enter__()
            client.post("/predict/image", files={"file": ("w.jpg", warm)})
        for _ in tqdm(range(rounds), desc="rounds"):
            for clip, path in paths.items():
                for name, client in apps.items():
                    body, wall, cpu = post_clip(client, path, SAMPLE_FPS)
                    measured[clip][name].append((wall, cpu))
                    bodies[clip][name] = body
    finally:
        for client in apps.values():
            client.__exit__(None, None, None)
    return {
        clip: {
            name: {
                "wall_s": statistics.median(w for w, _ in runs),
                "cpu_s": statistics.median(c for _, c in runs),
                "realtime": seconds / statistics.median(w for w, _ in runs),
                "detection": bodies[clip][name]["detection"],
                **compared(bodies[clip]["off"], bodies[clip][name]),
            }
            for name, runs in by_setting.items()
        }
        for clip, by_setting in measured.items()
    }


def plot(result: dict, path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    names = list(result)
    settings = list(next(iter(result.values())))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(settings)
    for i, name in enumerate(settings):
        xs = np.arange(len(names)) + i * width
        left.bar(xs, [result[c][name]["detection"]["full_frame_passes"] for c in names], width, label=name)
        right.bar(xs, [result[c][name]["realtime"] for c in names], width, label=name)
    for axis, title in ((left, "whole-frame passes run"), (right, "x real time (median)")):
        axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=8)
    fig.suptitle("Whole-frame passes put off over a still picture (quiet_passes)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    video = service_settings().video
    settings = {"off": video.model_copy(update={"quiet_passes": 0}), f"quiet_passes={video.quiet_passes}": video}
    with tempfile.TemporaryDirectory() as tmp:
        result = run(clips(Path(tmp), args.seconds), settings, args.rounds, args.seconds)
    for clip, by_setting in result.items():
        for name, r in by_setting.items():
            d = r["detection"]
            print(
                f"{clip:8s} {name:15s} {r['realtime']:5.1f}x  wall {r['wall_s']:.2f}s  CPU {r['cpu_s']:.2f}s  passes "
                f"{d['full_frame_passes']:3d} (put off {d.get('full_frame_passes_put_off', 0):3d})  regions "
                f"{d['regions_searched']:3d}  tracks {r['tracks'][1]} (off {r['tracks'][0]})  first seen within "
                f"{r['largest_first_seen_gap_s']:.1f}s  faces as off {r['faces_found_as_off']:.3f}, their labels "
                f"{r['labels_as_off']:.3f}"
            )
    save_report(args.output, "quiet_passes", result, lambda path: plot(result, path))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
