"""Video benchmark: a 30 s 720p 30 fps clip with moving faces through POST /predict/video at ``sample_fps=5``.

Prints wall time, the speed against real time, the CPU the request kept busy (cores full means moving work between
threads buys nothing), the pipeline breakdown (decode, detect, classify), peak memory, the decoder's own ceiling (the
service's ``FrameSampler`` over the clip with nothing else running: no request can beat it, as decoding runs on one
core beside the scan), and a naive baseline run in the same process (decode every frame with ``read()``, detect at
full resolution, classify each face in its own model call), with the speed-up over it.

    python -m benchmarks.bench_video [--seconds 30] [--json runs/bench/bench_video.json] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
from fastapi.testclient import TestClient

from benchmarks import find_entry, service_settings
from benchmarks.synth import Appearance, write_clip
from model_store import Predictor, crop_face
from service.config import Settings
from service.detection import DlibHogDetector
from service.main import create_app
from service.video.decode import FrameSampler, Sampling

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "images"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--sample-fps", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--detector", help="detector backend (default: the service's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline (repeated runs of a scorecard)")
    return p


def make_clip(path: Path, seconds: float) -> Path:
    """Two people: one drifting across the frame the whole time, a second one for the middle third, faces changing."""
    photos = [cv2.resize(cv2.imread(str(p)), (300, 300)) for p in sorted(PHOTOS.glob("*.jpg"))[:12]]
    appearances = [
        Appearance(photos[i % 6], i * 5.0, (i + 1) * 5.0, (100 + 60 * (i % 2), 200), (12, 0))
        for i in range(int(seconds // 5))
    ]
    appearances.append(Appearance(photos[7], seconds / 3, 2 * seconds / 3, (850, 150), (-8, 4)))
    return write_clip(path, appearances, seconds, fps=30, size=(1280, 720))


def naive_baseline(path: Path, sample_fps: float) -> float:
    """Seconds for the frame-by-frame way: read() every frame, full-resolution detection, one model call a face.

    Each face is one ``Predictor.predict`` call of the service's default model without mirror TTA, as this baseline
    has always been measured (the service averages each face with its mirror, so the baseline does less model work
    per face than it).
    """
    predictor = Predictor.load(find_entry(service_settings().default_model), tta=False)
    spec = predictor.manifest.input
    detector = DlibHogDetector(max_side=10_000, rotation_fallback=False)
    cap, started, index = cv2.VideoCapture(str(path)), time.perf_counter(), 0
    fps, every = cap.get(cv2.CAP_PROP_FPS), None
    every = max(1, round(fps / sample_fps))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % every == 0:
            for face in detector.detect(frame):
                predictor.predict([crop_face(frame, face.box, spec)])
        index += 1
    return time.perf_counter() - started


def decoder_ceiling(path: Path, sample_fps: float) -> tuple[float, float]:
    """Wall and CPU seconds of the service's decoder alone over the clip (every frame decoded, the sampled ones
    converted to BGR, as a request does): the floor under a request's wall on this machine."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in FrameSampler(str(path), Sampling(sample_fps)):
        pass
    return time.perf_counter() - started, time.process_time() - cpu


def run_service(clip: Path, sample_fps: float, detector: str | None = None) -> tuple[dict, float, float]:
    """POST the clip to an in-process app (after a warm-up request); the response body, the wall time and the CPU
    time of the process meanwhile (every thread: decoder, scan, model workers, the runtime's own threads)."""
    warmup = cv2.imencode(".jpg", cv2.imread(str(next(PHOTOS.glob("*.jpg")))))[1].tobytes()
    chosen = {"detector": {"backend": detector}} if detector else {}
    with TestClient(create_app(Settings(_env_file=None, log_level="warning", **chosen))) as client:
        client.post("/predict/image", files={"file": ("w.jpg", warmup)})
        return post_clip(client, clip, sample_fps)


def post_clip(client: TestClient, clip: Path, sample_fps: float) -> tuple[dict, float, float]:
    """``POST /predict/video`` of ``clip``: the response body, the wall time and the process's CPU time meanwhile."""
    data = clip.read_bytes()
    started, cpu = time.perf_counter(), time.process_time()
    response = client.post(f"/predict/video?sample_fps={sample_fps}", files={"file": ("b.mp4", data, "video/mp4")})
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    response.raise_for_status()
    return response.json(), wall, cpu


def report(r: dict) -> None:
    t = r["timings"]
    print(
        f"{r['clip']}: {r['wall_s']:.2f}s wall -> {r['realtime_factor']:.1f}x real time "
        f"({r['frames_analyzed']} analysed of {t['frames_decoded']:.0f} decoded, {r['tracks']} tracks)"
    )
    print(f"  CPU {r['cpu_s']:.2f}s over the request's {r['wall_s']:.2f}s: {r['cpu_s'] / r['wall_s']:.2f} cores busy")
    print(
        f"  breakdown: decode {t['decode']:.2f}s  detect+crop {t['detect']:.2f}s  classify {t['classify']:.2f}s "
        "(decode overlaps detection)"
    )
    wall, cpu = r["decoder_alone_s"], r["decoder_alone_cpu_s"]
    print(
        f"  decoder alone: {wall:.2f}s wall, {cpu:.2f}s CPU -> at most {r['decoder_ceiling']:.1f}x real time on this "
        "machine (decoding runs on one core beside the scan)"
    )
    d = r["detection"]
    if d:
        hit = d["regions_with_a_face"] / max(d["regions_searched"], 1)
        print(
            f"  detection: {d['full_frame_passes']} whole-frame passes, {d['regions_searched']} regions around tracks"
            f" searched (a face in {hit:.1%} of them), {d['regions_carried_forward']} carried forward"
        )
    print(
        f"  peak RSS {r['peak_rss_mb']:.0f} MB (process, incl. models; {r['rss_before_mb']:.0f} MB before the request)"
    )
    if r["baseline_s"] is not None:
        print(
            f"  naive baseline (read every frame, full-res detection, 1 face per model call): {r['baseline_s']:.2f}s "
            f"-> speed-up {r['speedup_vs_baseline']:.2f}x"
        )


def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "bench.mp4", args.seconds)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        body, wall, cpu = run_service(clip, args.sample_fps, args.detector)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        baseline = None if args.no_baseline else naive_baseline(clip, args.sample_fps)
        decoder_wall, decoder_cpu = decoder_ceiling(clip, args.sample_fps)
        size_mb = clip.stat().st_size / 1e6
    result = {
        "clip": f"{args.seconds:.0f}s 1280x720 30fps mp4v ({size_mb:.1f} MB)",
        "wall_s": wall,
        "cpu_s": cpu,  # the whole process's, over the request's wall: cores kept busy
        "realtime_factor": args.seconds / wall,
        "frames_analyzed": body["frames_analyzed"],
        "tracks": len(body["tracks"]),
        # what "the same timelines" is checked on between two runs (e.g. two detectors, before and after a change)
        "track_labels": [
            {
                "first_seen": tr["first_seen"],
                "last_seen": tr["last_seen"],
                "labels": [p["dominant"] for p in tr["timeline"]],
            }
            for tr in body["tracks"]
        ],
        "timings": body["timings"],
        "detection": body.get("detection", {}),
        "decoder_alone_s": decoder_wall,
        "decoder_alone_cpu_s": decoder_cpu,
        "decoder_ceiling": args.seconds / decoder_wall,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "baseline_s": baseline,
        "speedup_vs_baseline": None if baseline is None else baseline / wall,
    }
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
