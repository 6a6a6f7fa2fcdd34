"""Live stream benchmark: sessions on ``WS /stream`` sending 640x480 frames at a fixed rate, against a live server.

Each session has a sender on a fixed schedule (it never waits for replies) and a receiver; a frame's latency is the
reply's arrival minus that frame's send time (``seq`` is the frame's index in the session). Per scenario it prints
offered and delivered frames/s, the dropped share (1 - results / frames sent), p50/p95 latency, the server's own
time per frame, the tracks seen, and the server's RSS and CPU share (from ``/proc``). The same frames posted to
``/predict/image`` one at a time by the same client give the baseline of each model: the ratio is a session's best
delivered frames/s over that loop's frames/s, both measured in this run. ``--soak`` runs one long session and reports
RSS, p95 and delivered frames/s per minute. Frames: shared photos of one or two people on a 640x480 canvas, moving a
little from frame to frame (a smooth loop, so tracks hold), JPEG-encoded once, sent with their capture time.

The server is started here (``python -m service``, this environment's settings, the scenario's model as the default)
unless ``--url`` names one; then RSS and CPU come from ``--server-pid`` where given. Writes ``bench_stream.json`` (or
``bench_stream_soak.json``) and a PNG plot (needs matplotlib) into ``--output``.

    python -m benchmarks.bench_stream [--seconds 10] [--faces 1] [--only fast_1x30 ...] [--output runs/bench_stream]
    python -m benchmarks.bench_stream --soak [--soak-minutes 10] [--soak-fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from benchmarks import add_model_argument, process_cpu_s, pyplot
from benchmarks.bench_service import build_request, exchange
from benchmarks.synth import background, paste
from emotion_client.stream_messages import STREAM_PATH, SUBPROTOCOL, pack_frame

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos" / "images"
FAST_MODEL = "fer_emotion_cnn"
LOOP_FRAMES = 60  # one period of the motion: the loop joins smoothly, so a looping session is one steady scene
FACE_PX = 240  # each photo is scaled to fit this square; two of them side by side fit 640 px with room to move
DRAIN_S = 15.0  # after the last frame: how long the final summary may take


@dataclass(frozen=True)
class Scenario:
    name: str
    role: str  # "fast" or "default": which model
    sessions: int = 1
    fps: float = 0.0  # offered per session; 0 for the /predict/image loop


def scenarios(max_fps: float) -> list[Scenario]:
    """The default run: the issue's targets, each model's saturation point and each model's image loop."""
    return [
        Scenario("fast_1x30", "fast", 1, 30),
        Scenario("fast_4x10", "fast", 4, 10),
        Scenario("fast_1xmax", "fast", 1, max_fps),
        Scenario("fast_image_loop", "fast"),
        Scenario("default_1x15", "default", 1, 15),
        Scenario("default_1x30", "default", 1, 30),
        Scenario("default_1xmax", "default", 1, max_fps),
        Scenario("default_image_loop", "default"),
    ]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds per scenario sent before the measured part")
    p.add_argument("--faces", type=int, choices=[1, 2], default=1, help="faces per frame")
    p.add_argument("--max-fps", type=float, default=200.0, help="offered rate of the *_1xmax (saturation) scenarios")
    p.add_argument("--fast-model", default=FAST_MODEL)
    add_model_argument(p)
    p.add_argument("--url", help="a running service (default: start one per model here)")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid on this machine, for RSS and CPU")
    p.add_argument("--only", nargs="+", choices=[s.name for s in scenarios(0)], help="run these (default: all)")
    p.add_argument("--soak", action="store_true", help="one long session instead of the scenarios")
    p.add_argument("--soak-minutes", type=int, default=10)
    p.add_argument("--soak-fps", type=float, default=15.0)
    p.add_argument("--output", "--out", type=Path, default=ROOT / "runs" / "bench_stream", help="JSON and PNG here")
    return p


# --- frames ---------------------------------------------------------------------------------------------------------


def face_photos(count: int) -> list[np.ndarray]:
    """Colour photos of ``count`` different people, each with exactly one face dlib's HOG finds (whatever the server
    runs)."""
    from service.detection import DlibHogDetector  # dlib only where frames are built

    detector, chosen, people = DlibHogDetector(), [], set()
    for path in sorted(PHOTOS.glob("*.jpg")):
        person = path.stem.rsplit("_", 1)[0]
        image = cv2.imread(str(path))
        if person in people or image is None or is_gray(image):
            continue
        scale = FACE_PX / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = background(640, 480)
        paste(canvas, image, 200, 120)
        if len(detector.detect(canvas)) == 1:
            chosen.append(image)
            people.add(person)
            if len(chosen) == count:
                return chosen
    raise SystemExit(f"fewer than {count} single-face photos in {PHOTOS}")


def is_gray(image: np.ndarray) -> bool:
    """A gray photo stored as BGR (a webcam sends colour, and the default model routes gray faces elsewhere)."""
    return bool(np.abs(image.astype(np.int16) - image[..., :1]).max() < 8)


def frame_positions(i: int, faces: int, n: int = LOOP_FRAMES) -> list[tuple[int, int]]:
    """Top-left corners of the faces in frame ``i`` of an ``n``-frame loop: a small smooth periodic motion (at most
    15 px across and 8 px down from the rest position), the second face mirroring the first."""
    phase = 2 * math.pi * i / n
    dx, dy = round(15 * math.sin(phase)), round(8 * math.sin(2 * phase))
    if faces == 1:
        return [(200 + dx, 120 + dy)]
    return [(40 + dx, 120 + dy), (360 - dx, 120 + dy)]


def build_frames(faces: int, n: int = LOOP_FRAMES) -> list[bytes]:
    """``n`` JPEG frames (640x480) of ``faces`` people moving a little, encoded once."""
    photos, base = face_photos(faces), background(640, 480)
    frames = []
    for i in range(n):
        canvas = base.copy()
        for photo, (x, y) in zip(photos, frame_positions(i, faces, n), strict=True):
            paste(canvas, photo, x, y)
        frames.append(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return frames


# --- one session ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    seq: int
    at: float  # perf_counter when it arrived
    server_ms: float
    faces: int


@dataclass
class SessionLog:
    """What one session sent and got: the raw material of every figure."""

    fps: float
    start: float = 0.0  # perf_counter of the first frame's slot
    sent: list[float] = field(default_factory=list)  # perf_counter at send, by seq
    replies: list[Reply] = field(default_factory=list)
    tracks: set[int] = field(default_factory=set)
    errors: int = 0
    counts: dict | None = None  # the final summary's frame counts (received, analysed, dropped, bad)


async def send_frames(ws: ClientConnection, frames: list[bytes], seconds: float, log: SessionLog) -> None:
    """Frames on a fixed schedule (never waiting for replies), each with its send time as capture time."""
    log.start = time.perf_counter()
    for k in range(round(seconds * log.fps)):
        delay = log.start + k / log.fps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        log.sent.append(now)
        await ws.send(pack_frame(frames[k % len(frames)], now))


async def receive(ws: ClientConnection, log: SessionLog) -> None:
    """Results until the final summary (or the close)."""
    async for message in ws:
        at = time.perf_counter()  # before parsing: the arrival is what latency measures
        m = json.loads(message)
        if m["type"] == "result":
            log.replies.append(Reply(m["seq"], at, m["server_ms"], len(m["faces"])))
            log.tracks.update(f["track_id"] for f in m["faces"])
        elif m["type"] == "error":
            log.errors += 1
        elif m["type"] == "summary" and m.get("final"):
            log.counts = m["frames"]
            return


async def run_session(
    base: str, model: str, frames: list[bytes], fps: float, seconds: float, delay: float = 0.0
) -> SessionLog:
    """One session: options, ``ready``, then ``seconds`` of frames at ``fps``, then ``close`` and its summary."""
    await asyncio.sleep(delay)
    log = SessionLog(fps)
    url = "ws" + base.removeprefix("http") + STREAM_PATH
    async with connect(url, subprotocols=[SUBPROTOCOL], compression=None, proxy=None, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "options", "model": model}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise SystemExit(f"the session was not set up: {ready}")
        receiver = asyncio.create_task(receive(ws, log))
        await send_frames(ws, frames, seconds, log)
        await ws.send(json.dumps({"type": "close"}))
        await asyncio.wait_for(receiver, DRAIN_S)
    return log


# --- figures (pure) -------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def window_stats(log: SessionLog, first: int, last: int) -> dict:
    """Figures over the frames ``first``..``last - 1`` (by seq) of a session: a reply counts for its frame."""
    if min(last, len(log.sent)) <= first:
        raise ValueError(f"no frames were sent in slots {first}..{last - 1} (the session sent {len(log.sent)})")
    last = min(last, len(log.sent))
    frames = last - first
    replies = [r for r in log.replies if first <= r.seq < last]
    latencies = [(r.at - log.sent[r.seq]) * 1000 for r in replies]
    span = log.sent[last - 1] - log.sent[first] + 1 / log.fps  # frames/fps when the sender kept its schedule
    late = [(log.sent[k] - log.start - k / log.fps) * 1000 for k in range(first, last)]
    return {
        "frames_sent": frames,
        "results": len(replies),
        "offered_fps": log.fps,
        "sent_fps": frames / span,
        "delivered_fps": len(replies) / span,
        "dropped_share": 1 - len(replies) / frames,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "server_ms_p50": percentile([r.server_ms for r in replies], 50),
        "server_ms_p95": percentile([r.server_ms for r in replies], 95),
        "sender_late_ms_p95": percentile(late, 95),
        "faces_per_result": float(np.mean([r.faces for r in replies])) if replies else 0.0,
    }


def session_stats(log: SessionLog, warmup_s: float) -> dict:
    """A session's figures after its warm-up frames, with its tracks, errors and the server's own counts."""
    stats = window_stats(log, round(warmup_s * log.fps), len(log.sent))
    return {**stats, "tracks": len(log.tracks), "errors": log.errors, "server_counts": log.counts}


def minute_stats(log: SessionLog, warmup_s: float, minutes: int) -> list[dict]:
    """The soak's figures per minute of sending after the warm-up (frames binned by their slot)."""
    first, per_minute = round(warmup_s * log.fps), round(60 * log.fps)
    return [window_stats(log, first + m * per_minute, first + (m + 1) * per_minute) for m in range(minutes)]


def sessions_summary(stats: list[dict]) -> dict:
    """Several sessions at once: their totals and the worst and best session."""
    delivered = [s["delivered_fps"] for s in stats]
    return {
        "sessions": len(stats),
        "delivered_fps_min": min(delivered),
        "delivered_fps_max": max(delivered),
        "delivered_fps_total": sum(delivered),
        "dropped_share": 1 - sum(s["results"] for s in stats) / max(1, sum(s["frames_sent"] for s in stats)),
        "p50_ms": max(s["p50_ms"] for s in stats),
        "p95_ms": max(s["p95_ms"] for s in stats),
        "per_session": stats,
    }


# --- the server and its process -------------------------------------------------------------------------------------


def proc_usage(pid: int | None) -> tuple[float, float] | None:
    """(RSS in MB, CPU seconds used so far) of a local process, from /proc; None where unknown."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    cpu = process_cpu_s(pid)
    if cpu is None:
        return None
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return rss_kb / 1024, cpu


def usage_between(pid: int | None, before: tuple[float, float] | None, seconds: float) -> dict:
    """The server's RSS now and its CPU share (1.0 = one core busy) since ``before``."""
    after = proc_usage(pid)
    if before is None or after is None:
        return {"server_rss_mb": None, "server_cpu_share": None}
    return {"server_rss_mb": after[0], "server_cpu_share": (after[1] - before[1]) / seconds}


@contextmanager
def serving(url: str | None, model: str, pid: int | None = None) -> Iterator[tuple[str, int | None]]:
    """(base URL, server pid): ``url`` as given, or a ``python -m service`` started here with ``model`` as default."""
    if url:
        yield url.rstrip("/"), pid
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EMOTION_LOG_LEVEL": "warning", "EMOTION_DEFAULT_MODEL": model}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready in {timeout:.0f} s")


# --- scenarios ------------------------------------------------------------------------------------------------------


async def image_loop(base: str, model: str, frames: list[bytes], seconds: float, warmup: float) -> dict:
    """The same frames posted to ``/predict/image`` one at a time on one keep-alive connection."""
    url = httpx.URL(f"{base}/predict/image?model={model}")
    requests = [build_request(str(url), frame) for frame in frames]
    reader, writer = await asyncio.open_connection(url.host, url.port)
    latencies, errors, k = [], 0, 0
    started = time.perf_counter()
    measured_from, deadline = started + warmup, started + warmup + seconds
    while (now := time.perf_counter()) < deadline:
        status = await exchange(reader, writer, requests[k % len(requests)])
        k += 1
        if now >= measured_from:
            latencies.append((time.perf_counter() - now) * 1000)
            errors += status != 200
    writer.close()
    elapsed = time.perf_counter() - measured_from
    return {
        "requests": len(latencies),
        "errors": errors,
        "fps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
    }


async def stream_scenario(
    base: str, model: str, frames: list[bytes], s: Scenario, seconds: float, warmup: float
) -> dict:
    """``s.sessions`` sessions at once, their starts spread over one frame interval (clients are not in step)."""
    total = warmup + seconds
    logs = await asyncio.gather(
        *(run_session(base, model, frames, s.fps, total, i / (s.fps * s.sessions)) for i in range(s.sessions))
    )
    stats = [session_stats(log, warmup) for log in logs]
    return stats[0] if s.sessions == 1 else sessions_summary(stats)


def run_scenario(
    base: str, pid: int | None, model: str, frames: list[bytes], s: Scenario, args: argparse.Namespace
) -> dict:
    before, started = proc_usage(pid), time.perf_counter()
    if s.fps:
        result = asyncio.run(stream_scenario(base, model, frames, s, args.seconds, args.warmup))
    else:
        result = asyncio.run(image_loop(base, model, frames, args.seconds, args.warmup))
    usage = usage_between(pid, before, time.perf_counter() - started)
    return {"model": model, "sessions": s.sessions, "offered_fps": s.fps, **result, **usage}


def ratios(results: dict) -> dict:
    """Per model: the best single session's delivered frames/s over the image loop's frames/s (same run)."""
    out = {}
    for role in ("fast", "default"):
        loop = results.get(f"{role}_image_loop")
        single = [v["delivered_fps"] for k, v in results.items() if k.startswith(f"{role}_1x")]
        if loop and single and loop["fps"]:
            out[role] = {"stream_fps": max(single), "image_loop_fps": loop["fps"], "ratio": max(single) / loop["fps"]}
    return out


def goals(results: dict, ratio: dict) -> list[dict]:
    """The issue's targets against this run (absent scenarios are left out)."""
    checks = [
        ("fast_1x30", "delivered_fps", ">=", 30),
        ("fast_1x30", "p95_ms", "<=", 50),
        ("default_1x15", "delivered_fps", ">=", 15),
        ("default_1x15", "p95_ms", "<=", 80),
        ("fast_4x10", "delivered_fps_min", ">=", 8),
    ]
    out = []
    for name, key, op, target in checks:
        if name in results:
            value = results[name][key]
            met = round(value, 1) >= target if op == ">=" else value <= target
            out.append({"scenario": name, "measure": key, "goal": f"{op} {target}", "value": value, "met": met})
    for role, r in ratio.items():
        out.append(
            {
                "scenario": f"{role} stream / image loop",
                "measure": "ratio",
                "goal": "> 1",
                "value": r["ratio"],
                "met": r["ratio"] > 1,
            }
        )
    return out


# --- the run --------------------------------------------------------------------------------------------------------


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def print_row(name: str, r: dict) -> None:
    usage = f"rss {r['server_rss_mb']:5.0f} MB  cpu {r['server_cpu_share']:4.2f}" if r.get("server_rss_mb") else ""
    if not r["offered_fps"]:
        print(
            f"{name:19s} one at a time     {r['fps']:6.1f} frames/s  p50 {r['p50_ms']:6.1f}  p95 {r['p95_ms']:6.1f} ms"
            f"  ({r['errors']} errors)  {usage}"
        )
        return
    if r["sessions"] > 1:
        delivered = f"{r['delivered_fps_min']:.1f}-{r['delivered_fps_max']:.1f} each"
    else:
        delivered = f"{r['delivered_fps']:6.1f}"
    print(
        f"{name:19s} {r['sessions']}x{r['offered_fps']:<5.0f} offered  {delivered} frames/s  "
        f"dropped {r['dropped_share']:4.0%}  p50 {r['p50_ms']:6.1f}  p95 {r['p95_ms']:6.1f} ms  {usage}"
    )


def run_default(args: argparse.Namespace, frames: list[bytes]) -> dict:
    """Every chosen scenario, one server per model (started here unless ``--url``)."""
    chosen = [s for s in scenarios(args.max_fps) if not args.only or s.name in args.only]
    models = {"fast": args.fast_model, "default": args.model}
    results: dict = {}
    for role in ("fast", "default"):
        group = [s for s in chosen if s.role == role]
        if not group:
            continue
        with serving(args.url, models[role], args.server_pid) as (base, pid):
            for s in group:
                results[s.name] = run_scenario(base, pid, models[role], frames, s, args)
                print_row(s.name, results[s.name])
    return results


def run_soak(args: argparse.Namespace, frames: list[bytes]) -> dict:
    """One session at ``--soak-fps`` for ``--soak-minutes``; the server's RSS and CPU sampled every minute."""
    minutes = max(1, args.soak_minutes)
    with serving(args.url, args.model, args.server_pid) as (base, pid):
        samples: list[tuple[float, float, float] | None] = []

        async def monitor(start: float) -> None:
            for m in range(minutes + 1):
                await asyncio.sleep(max(0.0, start + args.warmup + 60 * m - time.perf_counter()))
                usage = proc_usage(pid)
                samples.append(None if usage is None else (time.perf_counter(), *usage))

        async def soak() -> SessionLog:
            watcher = asyncio.create_task(monitor(time.perf_counter()))
            log = await run_session(base, args.model, frames, args.soak_fps, args.warmup + 60 * minutes)
            await watcher
            return log

        log = asyncio.run(soak())
    rows = [
        {"minute": m + 1, **row, **minute_usage(samples, m)}
        for m, row in enumerate(minute_stats(log, args.warmup, minutes))
    ]
    start_rss = samples[0][1] if samples[0] else None  # once the warm-up is over
    return {
        "model": args.model,
        "offered_fps": args.soak_fps,
        "rss_start_mb": start_rss,
        "minutes": rows,
        **session_stats(log, args.warmup),
    }


def minute_usage(samples: list[tuple[float, float, float] | None], m: int) -> dict:
    """Minute ``m``'s server RSS (at its end) and CPU share, from (time, RSS MB, CPU s) samples at minute bounds."""
    a, b = samples[m], samples[m + 1]
    if a is None or b is None:
        return {"server_rss_mb": None, "server_cpu_share": None}
    return {"server_rss_mb": b[1], "server_cpu_share": (b[2] - a[2]) / (b[0] - a[0])}


def soak_trend(minutes: list[dict]) -> dict:
    """First minute against the last: is memory and latency flat?"""
    first, last = minutes[0], minutes[-1]
    rss = (first["server_rss_mb"], last["server_rss_mb"])
    return {
        "rss_first_mb": rss[0],
        "rss_last_mb": rss[1],
        "rss_growth_mb": rss[1] - rss[0] if None not in rss else None,
        "p95_first_ms": first["p95_ms"],
        "p95_last_ms": last["p95_ms"],
        "p95_max_ms": max(m["p95_ms"] for m in minutes),
    }


def print_soak(soak: dict) -> None:
    print(f"soak: one session at {soak['offered_fps']:.0f} frames/s, {soak['model']}")
    print("minute  delivered  dropped  p50 ms  p95 ms  server RSS MB  server CPU")
    for m in soak["minutes"]:
        usage = f"{m['server_rss_mb']:13.1f}  {m['server_cpu_share']:10.2f}" if m["server_rss_mb"] else ""
        print(
            f"{m['minute']:6d}  {m['delivered_fps']:9.1f}  {m['dropped_share']:7.1%}  {m['p50_ms']:6.1f}  "
            f"{m['p95_ms']:6.1f}  {usage}"
        )
    t = soak["trend"]
    if t["rss_growth_mb"] is not None:
        print(
            f"server RSS {soak['rss_start_mb']:.1f} MB after the warm-up, {t['rss_first_mb']:.1f} after minute 1, "
            f"{t['rss_last_mb']:.1f} after the last ({t['rss_growth_mb']:+.1f} MB from minute 1)"
        )
    print(
        f"p95 {t['p95_first_ms']:.1f} ms in minute 1, {t['p95_last_ms']:.1f} in the last (worst {t['p95_max_ms']:.1f})"
    )


def main(args: argparse.Namespace) -> dict:
    frames = build_frames(args.faces)
    meta = {
        **machine(),
        "faces": args.faces,
        "frame_bytes": int(np.mean([len(f) for f in frames])),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "url": args.url,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    if args.soak:
        soak = run_soak(args, frames)
        soak["trend"] = soak_trend(soak["minutes"])
        out = {**meta, "loadavg_end": machine()["loadavg"], "soak": soak}
        print_soak(soak)
        name = "bench_stream_soak"
    else:
        results = run_default(args, frames)
        ratio = ratios(results)
        out = {
            **meta,
            "loadavg_end": machine()["loadavg"],
            "scenarios": results,
            "ratios": ratio,
            "goals": goals(results, ratio),
        }
        for role, r in ratio.items():
            print(
                f"{role}: best session {r['stream_fps']:.1f} frames/s / image loop {r['image_loop_fps']:.1f} "
                f"= {r['ratio']:.2f}x"
            )
        for g in out["goals"]:
            print(
                f"goal {g['scenario']} {g['measure']} {g['goal']}: {g['value']:.1f} {'met' if g['met'] else 'MISSED'}"
            )
        name = "bench_stream"
    print(f"load average {meta['loadavg']} at the start, {out['loadavg_end']} at the end ({meta['cpu_count']} cores)")
    (args.output / f"{name}.json").write_text(json.dumps(out, indent=2))
    plot(out, args.output / f"{name}.png")
    return out


def plot(out: dict, path: Path) -> None:
    """Delivered frames/s and latency per scenario, or RSS and p95 per soak minute; skipped without matplotlib."""
    if (plt := pyplot(path)) is None:
        return

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    (plot_soak if "soak" in out else plot_scenarios)(out, ax1, ax2)
    ax1.legend()
    ax2.legend()
    faces = f"{out['faces']} face{'s' if out['faces'] > 1 else ''}"
    fig.suptitle(f"WS /stream, {faces} per 640x480 frame ({out['cpu_count']} CPU cores, load {out['loadavg'][0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_soak(out: dict, ax1, ax2) -> None:
    rows = out["soak"]["minutes"]
    x = [m["minute"] for m in rows]
    ax1.plot(x, [m["server_rss_mb"] or float("nan") for m in rows], marker="o", label="server RSS")
    ax1.set(xlabel="minute", ylabel="MB")
    ax1.set_ylim(bottom=0)  # from zero: flat is what it should look like
    ax2.plot(x, [m["p95_ms"] for m in rows], marker="o", label="p95")
    ax2.plot(x, [m["p50_ms"] for m in rows], marker="x", label="p50")
    ax2.set(xlabel="minute", ylabel="latency, send to reply (ms)")
    ax2.set_ylim(bottom=0)


def plot_scenarios(out: dict, ax1, ax2) -> None:
    names = list(out["scenarios"])
    rows = [out["scenarios"][n] for n in names]
    x = np.arange(len(names))
    ax1.bar(x, [r.get("delivered_fps_min", r.get("delivered_fps", r.get("fps"))) for r in rows], label="delivered")
    streams = [i for i, r in enumerate(rows) if r["offered_fps"]]
    offered = [rows[i]["offered_fps"] for i in streams]
    ax1.scatter(streams, offered, color="black", marker="_", s=400, label="offered")
    ax1.set(ylabel="frames/s (worst session)")
    ax2.bar(x, [r["p95_ms"] for r in rows], label="p95")
    ax2.bar(x, [r["p50_ms"] for r in rows], label="p50")
    ax2.set(ylabel="latency, send to reply (ms)")
    for ax in (ax1, ax2):
        ax.set_xticks(x, names, rotation=40, ha="right")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
