"""Job benchmark: 8 clips of 30 s 720p (two people, as in bench_video) through the Redis job queue with 1, 2 and
4 ``python -m service.worker`` processes, and the same clips through ``POST /predict/video`` one after another.

For each worker count: throughput (clips per minute, from the first submission to the last result), queue wait
(submitted -> started) and processing time (started -> finished) per job, and speed against real time (footage
seconds per wall second, overall and per job). Redis: ``EMOTION_QUEUE_URL`` or 127.0.0.1:6379 when it answers, else
a ``redis-server`` started here; each run uses a key prefix of its own and deletes it after. Writes JSON, and a PNG
when matplotlib is importable. Workers compete for the machine's cores: scaling stops where the cores run out.

    python -m benchmarks.bench_jobs [--seconds 30] [--clips 8] [--workers 1 2 4] [--output runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import cv2
import redis
from fastapi.testclient import TestClient
from tqdm import tqdm

from benchmarks import pyplot
from benchmarks.synth import Appearance, write_clip
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "images"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--sample-fps", type=float, default=5.0)
    p.add_argument("--output", type=Path, help="write bench_jobs.json (and bench_jobs.png) into this folder")
    return p


def make_clip(path: Path, seconds: float, offset: int) -> Path:
    """bench_video's clip with other photos per clip: one person drifting across, a second in the middle third."""
    photos = [cv2.resize(cv2.imread(str(p)), (300, 300)) for p in sorted(PHOTOS.glob("*.jpg"))[offset : offset + 12]]
    appearances = [
        Appearance(photos[i % 6], i * 5.0, (i + 1) * 5.0, (100 + 60 * (i % 2), 200), (12, 0))
        for i in range(int(seconds // 5))
    ]
    appearances.append(Appearance(photos[7], seconds / 3, 2 * seconds / 3, (850, 150), (-8, 4)))
    return write_clip(path, appearances, seconds, fps=30, size=(1280, 720))


def redis_url() -> tuple[str, subprocess.Popen | None]:
    for url in filter(None, [os.environ.get("EMOTION_QUEUE_URL"), "redis://127.0.0.1:6379/0"]):
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            return url, None
        except redis.exceptions.RedisError:
            continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    time.sleep(0.5)
    return f"redis://127.0.0.1:{port}/0", server


def start_workers(n: int, url: str, name: str, jobs_dir: Path) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "EMOTION_QUEUE_URL": url,
        "EMOTION_QUEUE__NAME": name,
        "EMOTION_JOBS_DIR": str(jobs_dir),
        "EMOTION_QUEUE__WORKER_METRICS_PORT": "0",
        "EMOTION_LOG_LEVEL": "warning",
    }
    procs = [subprocess.Popen([sys.executable, "-m", "service.worker"], cwd=ROOT, env=env) for _ in range(n)]
    r, deadline = redis.Redis.from_url(url), time.monotonic() + 120
    while r.zcard(f"{name}:workers") < n:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("workers did not start")
        time.sleep(0.2)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=60)


def seconds_between(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def run_queue(clips: list[Path], n: int, url: str, args: argparse.Namespace) -> dict:
    """Submit every clip at once to an API on the queue, served by ``n`` workers; the figures of the jobs."""
    name, jobs_dir = f"bench-jobs-{uuid.uuid4().hex[:8]}", Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    workers = start_workers(n, url, name, jobs_dir)
    settings = Settings(_env_file=None, log_level="warning", jobs_dir=jobs_dir, queue={"url": url, "name": name})
    try:
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            ids = [submit(client, clip, args.sample_fps) for clip in clips]
            jobs = wait_all(client, ids, f"{n} worker(s)")
            wall = time.perf_counter() - started
    finally:
        stop(workers)
        r = redis.Redis.from_url(url)
        keys = list(r.scan_iter(f"{name}:*"))
        if keys:
            r.delete(*keys)
        shutil.rmtree(jobs_dir, ignore_errors=True)
    assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
    waits = [seconds_between(j["created"], j["started"]) for j in jobs]
    runs = [seconds_between(j["started"], j["finished"]) for j in jobs]
    return summary(f"queue, {n} worker(s)", len(clips), args.seconds, wall, waits, runs)


def submit(client: TestClient, clip: Path, sample_fps: float) -> str:
    response = client.post(
        f"/jobs/video?sample_fps={sample_fps}", files={"file": (clip.name, clip.read_bytes(), "video/mp4")}
    )
    response.raise_for_status()
    return response.json()["id"]


def wait_all(client: TestClient, ids: list[str], label: str) -> list[dict]:
    done: dict[str, dict] = {}
    with tqdm(total=len(ids), desc=label, unit="clip", leave=False) as bar:
        while len(done) < len(ids):
            for job_id in ids:
                if job_id not in done and (job := client.get(f"/jobs/{job_id}").json())["status"] in (
                    "succeeded",
                    "failed",
                    "cancelled",
                ):
                    done[job_id] = job
                    bar.update()
            time.sleep(0.1)
    return [done[i] for i in ids]


def run_sync(clips: list[Path], args: argparse.Namespace) -> dict:
    """The same clips through POST /predict/video, one after another, in one API process."""
    with TestClient(create_app(Settings(_env_file=None, log_level="warning"))) as client:
        client.post(f"/predict/video?sample_fps={args.sample_fps}", files={"file": ("w.mp4", clips[0].read_bytes())})
        runs, started = [], time.perf_counter()
        for clip in tqdm(clips, desc="POST /predict/video", unit="clip", leave=False):
            began = time.perf_counter()
            data = clip.read_bytes()
            response = client.post(
                f"/predict/video?sample_fps={args.sample_fps}", files={"file": (clip.name, data, "video/mp4")}
            )
            response.raise_for_status()
            runs.append(time.perf_counter() - began)
        wall = time.perf_counter() - started
    return summary("POST /predict/video, sequential", len(clips), args.seconds, wall, [0.0] * len(clips), runs)


def summary(label: str, n: int, seconds: float, wall: float, waits: list[float], runs: list[float]) -> dict:
    return {
        "run": label,
        "clips": n,
        "wall_s": wall,
        "clips_per_min": n / wall * 60,
        "realtime_factor": n * seconds / wall,
        "queue_wait_s": {"mean": statistics.mean(waits), "max": max(waits)},
        "processing_s": {"mean": statistics.mean(runs), "max": max(runs)},
        "per_job_realtime_factor": seconds / statistics.mean(runs),
    }


def report(results: list[dict]) -> None:
    print(f"{'run':34} {'wall s':>7} {'clips/min':>9} {'x real time':>11} {'wait mean/max s':>16} {'job s':>6}")
    for r in results:
        w, p = r["queue_wait_s"], r["processing_s"]
        print(
            f"{r['run']:34} {r['wall_s']:7.1f} {r['clips_per_min']:9.1f} {r['realtime_factor']:11.1f} "
            f"{w['mean']:7.1f} / {w['max']:6.1f} {p['mean']:6.2f}"
        )


def plot(results: list[dict], seconds: float, path: Path) -> None:
    if (plt := pyplot(path)) is None:
        return

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([r["run"].replace(", sequential", "") for r in results], [r["clips_per_min"] for r in results])
    ax.set(ylabel="clips per minute", title=f"{results[0]['clips']} clips of {seconds:g} s 720p")
    ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> list[dict]:
    url, server = redis_url()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = [
            make_clip(Path(tmp) / f"clip{i}.mp4", args.seconds, offset=12 * i)
            for i in tqdm(range(args.clips), desc="writing clips", leave=False)
        ]
        try:
            for n in args.workers:
                results.append(run_queue(clips, n, url, args))
            results.append(run_sync(clips, args))
        finally:
            if server is not None:
                server.terminate()
    report(results)
    print(f"({os.cpu_count()} CPU cores here: workers share them, so scaling stops where they run out)")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        meta = {"cpu_count": os.cpu_count(), "seconds": args.seconds, "sample_fps": args.sample_fps}
        (args.output / "bench_jobs.json").write_text(json.dumps({**meta, "results": results}, indent=2))
        plot(results, args.seconds, args.output / "bench_jobs.png")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
