"""Persons in video: how well ``POST /predict/video`` links a clip's tracks into persons, on clips built from the
shared photos (file names carry the person: ``Name_0003.jpg``).

Each clip shows two to four people in hard-cut shots over one backdrop; at least one person leaves and comes back in
a different photo, and some shots show two people side by side (on screen together: never one person). People are
split in two by name: clips of the first half calibrate the distance threshold (the largest whose pairwise precision
there is at least ``--target-precision``), clips of the other half are measured through the API at the service's
threshold. Reported per half: pairwise precision and recall of "these two tracks are the same person" and how often
a clip's number of persons is exact; the curves over thresholds come from the descriptors the pipeline computed,
read inside this process (they never leave it).

    python -m benchmarks.persons [--clips 48] [--calibration-clips 24] [--out /tmp/persons]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient

from benchmarks import find_entry, service_settings
from benchmarks.synth import Appearance, write_clip
from service.identity import FaceDescriber
from service.main import create_app
from service.persons import PersonLinking, TrackFaces, link

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "images"
SIZE, FACE = (960, 540), 240  # frame, photo side
SLOTS = {"centre": (360, 150), "left": (90, 150), "right": (630, 150)}
THRESHOLDS = np.round(np.arange(0.30, 0.701, 0.025), 3)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=48, help="held-out clips (the other half of the people)")
    p.add_argument("--calibration-clips", type=int, default=24)
    p.add_argument("--target-precision", type=float, default=0.99, help="on the calibration clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp32", action="store_true", help="describe with the fp32 graph instead of the int8 one")
    p.add_argument("--mirror", action="store_true", help="describe each chip and its mirror image, averaged")
    p.add_argument("--dlib-points", action="store_true", help="chips from dlib's 5-point predictor, not RetinaFace's")
    p.add_argument(
        "--cost", type=int, default=0, help="instead: bench_video's clip scanned N times, linking on and off"
    )
    p.add_argument("--out", type=Path, default=Path("/tmp/persons"), help="persons.json and persons.png go here")
    return p


@dataclass
class Shot:
    start: float
    end: float
    faces: list[tuple[str, int, str]]  # person, photo index, slot


def usable_people(detector) -> dict[str, list[np.ndarray]]:
    """People with at least two photos in which the detector finds exactly one face, photos resized to FACE."""
    by_person: dict[str, list[np.ndarray]] = {}
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = cv2.imread(str(path))
        if image is None or min(image.shape[:2]) < 150:
            continue
        image = cv2.resize(image, (FACE, FACE), interpolation=cv2.INTER_AREA)
        if len(detector.detect(image)) == 1:
            by_person.setdefault(re.sub(r"_\d+$", "", path.stem), []).append(image)
    return {name: photos for name, photos in by_person.items() if len(photos) >= 2}


def plan(rng: np.random.Generator, people: dict[str, list[np.ndarray]]) -> list[Shot]:
    """Each chosen person in a shot of their own, in random order; then one person (or two) back in another photo,
    never right after their first shot; sometimes a shot with two people side by side."""
    names = list(rng.choice(sorted(people), size=int(rng.integers(2, 5)), replace=False))
    order: list[list[tuple[str, int, str]]] = [[(n, 0, "centre")] for n in names]
    returners = names[: 1 + int(rng.random() < 0.4)]
    for r in returners:
        photo = int(rng.integers(1, len(people[r])))
        order.append([(r, photo, "centre")])
    if len(names) >= 2 and rng.random() < 0.5:  # two on screen together, the returner in its first photo
        a, b = names[0], names[-1]
        order.insert(int(rng.integers(1, len(order))), [(a, 0, "left"), (b, 0, "right")])
    shots, t = [], 0.0
    for faces in order:
        length = float(rng.uniform(1.6, 2.4))
        shots.append(Shot(round(t, 2), round(t + length, 2), faces))
        t += length
    return shots


def render(path: Path, shots: list[Shot], people: dict[str, list[np.ndarray]]) -> Path:
    appearances = [
        Appearance(people[name][photo], s.start, s.end, SLOTS[slot]) for s in shots for name, photo, slot in s.faces
    ]
    return write_clip(path, appearances, shots[-1].end, fps=10, size=SIZE)


def truth(track: dict, shots: list[Shot]) -> str:
    """The person most of a track's samples show (the shot at that time, the face whose slot holds the box)."""
    votes: Counter[str] = Counter()
    for p in track["timeline"]:
        shot = next((s for s in shots if s.start <= p["t"] < s.end), shots[-1])
        cx = p["box"]["x"] + p["box"]["width"] / 2
        name = min(shot.faces, key=lambda f: abs(SLOTS[f[2]][0] + FACE / 2 - cx))[0]
        votes[name] += 1
    return votes.most_common(1)[0][0]


def pair_counts(true: list[str], predicted: list[int]) -> tuple[int, int, int]:
    """True positives, false positives and false negatives over every pair of tracks."""
    tp = fp = fn = 0
    for (ta, pa), (tb, pb) in combinations(zip(true, predicted, strict=True), 2):
        same, linked = ta == tb, pa == pb
        tp, fp, fn = tp + (same and linked), fp + (linked and not same), fn + (same and not linked)
    return tp, fp, fn


def scores(clips: list[dict], key: str) -> dict:
    tp, fp, fn = (sum(c[key][i] for c in clips) for i in range(3))
    exact = [c[f"{key}_persons"] == c["true_persons"] for c in clips]
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "exact_person_count": round(float(np.mean(exact)), 4),
        "pairs_same": tp + fn,
        "pairs_linked": tp + fp,
    }


class Recording(PersonLinking):
    """The service's linking, keeping each answer's track faces in this process for the threshold curves."""

    seen: list[list[TrackFaces]]

    def faces(self, people, tracks):
        out = super().faces(people, tracks)
        self.seen.append(out)
        return out


def run_clips(client, linking: Recording, people, count: int, seed: int) -> list[dict]:
    rng, out = np.random.default_rng(seed), []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            shots = plan(rng, people)
            path = render(Path(tmp) / f"clip{i}.mp4", shots, people)
            response = client.post(
                "/predict/video?sample_fps=5", files={"file": ("c.mp4", path.read_bytes(), "video/mp4")}
            )
            response.raise_for_status()
            body = response.json()
            tracks, faces = body["tracks"], {f.track_id: f for f in linking.seen[-1]}
            true = [truth(t, shots) for t in tracks]
            clip = {
                "shots": [[f[0] for f in s.faces] for s in shots],
                "tracks": len(tracks),
                "true_persons": len(set(true)),
                "api": pair_counts(true, [t["person_id"] for t in tracks]),
                "api_persons": len(body["persons"]),
                "linking_s": body["timings"].get("persons", 0.0),
            }
            for th in THRESHOLDS:
                person_of = link([faces[t["track_id"]] for t in tracks], float(th))
                ids = [person_of[t["track_id"]] for t in tracks]
                clip[f"t{th}"], clip[f"t{th}_persons"] = pair_counts(true, ids), len(set(ids))
            out.append(clip)
    return out


def curves(clips: list[dict]) -> dict[str, dict]:
    return {f"{th:.3f}": scores(clips, f"t{th}") for th in THRESHOLDS}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for half, style in (("calibration", "--"), ("held_out", "-")):
        c = result[half]["curve"]
        ths = [float(t) for t in c]
        for metric, colour in (("precision", "C0"), ("recall", "C1"), ("exact_person_count", "C2")):
            ax.plot(ths, [c[t][metric] for t in c], style, color=colour, label=f"{metric} ({half})")
    ax.axvline(result["threshold"], color="k", lw=0.8, label=f"service threshold {result['threshold']}")
    ax.set_xlabel("descriptor distance threshold")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("tracks linked into persons, clips of the shared photos")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def measure_cost(pairs: int) -> dict:
    """bench_video's 30 s clip through the video pipeline's scan, linking on and off alternately: the scan thread's
    CPU seconds (``thread_time``, which other processes' load disturbs less than wall time; the chips are cut
    there) and, with linking on, the CPU seconds of describing and linking after the scan."""
    from benchmarks.bench_video import make_clip
    from model_store import Predictor
    from service.detection import create_detector
    from service.options import resolve_options
    from service.pipelines.video import FaceStep, VideoPipeline

    settings = service_settings()
    detector, linking = create_detector(settings.detector), PersonLinking(FaceDescriber())
    spec = Predictor.load(find_entry(settings.default_model)).image_spec
    pipeline, opts = VideoPipeline(detector), resolve_options(settings)
    runs: dict[str, list[float]] = {"on": [], "off": [], "offer": [], "describe_and_link": []}
    with tempfile.TemporaryDirectory() as tmp:
        clip = str(make_clip(Path(tmp) / "bench.mp4", 30.0))
        for _ in range(pairs):
            for mode in ("on", "off"):
                people = linking.collector() if mode == "on" else None
                if people is not None:
                    people.offer = timed(people.offer, spent := [0.0])
                step = FaceStep(detector, pipeline.cropper, spec, opts, people=people)
                cpu = time.thread_time()
                scan = pipeline.scan(clip, step, opts)
                runs[mode].append(time.thread_time() - cpu)
                if people is not None:
                    cpu = time.thread_time()
                    described = people.descriptors()
                    faces = [
                        TrackFaces(t, frozenset(people.frames[t]), people.first_seen[t], d)
                        for t, d in described.items()
                    ]
                    link(faces, linking.threshold)
                    runs["describe_and_link"].append(time.thread_time() - cpu)
                    runs["offer"].append(spent[0])
                runs.setdefault(f"samples_{mode}", []).append(len(scan.samples))
    median = {k: float(np.median(v)) for k, v in runs.items() if not k.startswith("samples")}
    own = median["offer"] + median["describe_and_link"]
    return {
        "cpu_s": runs,
        "median": median,
        "linking_cpu_s": round(own, 4),
        "share_of_scan_off": round(own / median["off"], 4),
    }


def timed(call, spent: list[float]):
    """``call``, adding the CPU seconds of each call to ``spent[0]`` (the scan's thread runs it)."""

    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return call(*args, **kwargs)
        finally:
            spent[0] += time.thread_time() - started

    return wrapper


def main(args: argparse.Namespace) -> dict:
    settings = service_settings()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cost:
        cost = measure_cost(args.cost)
        (args.out / "persons_cost.json").write_text(json.dumps(cost, indent=1))
        print(json.dumps(cost, indent=1))
        return cost
    with TestClient(create_app(settings)) as client:
        pipeline = client.app.state.pipelines.video
        if pipeline.persons is None:
            raise SystemExit("linking is off (EMOTION_VIDEO__LINK_PERSONS=false): nothing to measure")
        describer = FaceDescriber(int8=not args.fp32, mirror=args.mirror)
        if args.dlib_points:
            cut = describer.chip
            describer.chip = lambda frame, box, landmarks=None: cut(frame, box)
        linking = Recording(describer, pipeline.persons.threshold, pipeline.persons.per_track)
        object.__setattr__(linking, "seen", [])
        pipeline.persons = linking
        people = usable_people(client.app.state.pipelines.detector)
        names = sorted(people)
        halves = {
            "calibration": {n: people[n] for n in names[0::2]},
            "held_out": {n: people[n] for n in names[1::2]},
        }
        started = time.perf_counter()
        calibration = run_clips(client, linking, halves["calibration"], args.calibration_clips, args.seed)
        held_out = run_clips(client, linking, halves["held_out"], args.clips, args.seed + 1)
        seconds = time.perf_counter() - started
    cal_curve = curves(calibration)
    passing = [float(t) for t, s in cal_curve.items() if s["precision"] >= args.target_precision]
    result = {
        "people": {half: len(p) for half, p in halves.items()},
        "graph": "fp32" if args.fp32 else "int8",
        "mirror": args.mirror,
        "chip_points": "dlib" if args.dlib_points else "detector",
        "threshold": settings.video.person_threshold,
        "calibrated_threshold": max(passing) if passing else None,
        "target_precision": args.target_precision,
        "calibration": {"clips": len(calibration), "curve": cal_curve},
        "held_out": {
            "clips": len(held_out),
            "tracks": sum(c["tracks"] for c in held_out),
            "api": scores(held_out, "api"),
            "curve": curves(held_out),
        },
        "linking_s_per_clip": round(float(np.mean([c["linking_s"] for c in calibration + held_out])), 4),
        "seconds": round(seconds, 1),
    }
    (args.out / "persons.json").write_text(json.dumps({**result, "clips": held_out}, indent=1, default=str))
    plot(result, args.out / "persons.png")
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("calibration",)} | {"held_out": result["held_out"]["api"]},
            indent=1,
        )
    )
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
