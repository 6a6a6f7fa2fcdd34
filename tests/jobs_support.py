"""Fixtures and helpers for the job tests: a real Redis (``EMOTION_TEST_REDIS_URL`` when set; else database 15 of
the one on 127.0.0.1:6379 when it answers; else a ``redis-server`` started here on a free port), a key prefix per
test cleaned up after it, real worker processes (``python -m service.worker``), generated clips."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest
import redis
from fastapi.testclient import TestClient

from benchmarks.synth import Appearance, write_clip
from tests.conftest import ROOT, upload
from tests.live import free_port

FINAL = {"succeeded", "failed", "cancelled"}


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


TEST_REDIS_ENV = "EMOTION_TEST_REDIS_URL"
# Database 15 (the last of Redis' default 16): the tests' keys stay out of database 0, where a service keeps its jobs.
LOCAL_REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server for the whole session; never skipped: CI and this machine have ``redis-server``. The one
    ``EMOTION_TEST_REDIS_URL`` names must answer (a chosen server is never silently replaced)."""
    if chosen := os.environ.get(TEST_REDIS_ENV):
        assert answers(chosen), f"{TEST_REDIS_ENV}={chosen} does not answer"
        yield chosen
        return
    if answers(url := LOCAL_REDIS):
        yield url
        return
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: answers(url), 10, "redis-server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def queue_name(redis_url) -> Iterator[str]:
    """A key prefix (and arq queue) of this test's own; its keys and arq's keys of its jobs are deleted after."""
    name = f"emotion-test-{uuid.uuid4().hex[:10]}"
    yield name
    r = redis.Redis.from_url(redis_url)
    ids = [i.decode() for i in r.zrange(f"{name}:jobs", 0, -1)]
    keys = list(r.scan_iter(f"{name}:*", count=1000))
    keys += [f"arq:{kind}:{i}" for i in ids for kind in ("job", "retry", "in-progress", "result")]
    if keys:
        r.delete(*keys)


def wait_until(predicate: Callable[[], object], timeout: float, message: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"{message} (after {timeout:.0f}s)")


def submit(client: TestClient, clip: Path, query: str = "") -> str:
    response = client.post(f"/jobs/video?{query}", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_job(client: TestClient, job_id: str, statuses=FINAL, timeout: float = 60) -> dict:
    def reached():
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in statuses else None

    return wait_until(reached, timeout, f"job {job_id} never reached {sorted(statuses)}")


def same_analysis(job_result: dict, direct: dict) -> None:
    """A job's result against ``POST /predict/video`` on the same clip: the same tracks, the same labels."""

    def labels(body: dict):
        return [
            (t["track_id"], t["summary"]["dominant"], [p["dominant"] for p in t["timeline"]], t["segments"])
            for t in body["tracks"]
        ]

    assert job_result["frames_analyzed"] == direct["frames_analyzed"]
    assert labels(job_result) == labels(direct) and job_result["tracks"]
    assert job_result["summary"]["dominant"] == direct["summary"]["dominant"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, face_photo) -> Callable[..., Path]:
    """``clips(name, seconds, size=(640, 480))``: a clip of one face drifting right, made once per module."""
    folder = tmp_path_factory.mktemp("clips")
    face = cv2.resize(face_photo, (260, 260)) if max(face_photo.shape[:2]) > 260 else face_photo

    def make(name: str, seconds: float, size: tuple[int, int] = (640, 480), x: int = 60) -> Path:
        path = folder / f"{name}.mp4"
        if not path.exists():
            write_clip(path, [Appearance(face, 0, seconds, (x, 60), (15, 0))], seconds, size=size)
        return path

    return make


class Workers:
    """``python -m service.worker`` processes on the test's queue; stopped (SIGKILL if need be) at the end."""

    def __init__(self, redis_url: str, name: str, jobs_dir: Path, logs: Path, **settings: object) -> None:
        self.redis, self.name, self.logs = redis.Redis.from_url(redis_url), name, logs
        self.env = {
            **os.environ,
            "EMOTION_QUEUE_URL": redis_url,
            "EMOTION_QUEUE__NAME": name,
            "EMOTION_JOBS_DIR": str(jobs_dir),
            "EMOTION_LOG_LEVEL": "info",
            **{f"EMOTION_QUEUE__{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[int, int] = {}

    def start(
        self, n: int = 1, code: str | None = None, wait: bool = True, metrics_port: int | None = None
    ) -> list[subprocess.Popen]:
        """``n`` workers; ``code`` runs instead of ``-m service.worker`` (it must end by running it). Each gets a
        free metrics port of its own, unless ``metrics_port`` names the one they are all given."""
        started = []
        for _ in range(n):
            port = metrics_port or free_port()
            argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "service.worker"]
            log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
            env = {**self.env, "EMOTION_QUEUE__WORKER_METRICS_PORT": str(port)}
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.ports[proc.pid] = port
            started.append(proc)
        if wait:
            for proc in started:
                wait_until(lambda p=proc: self.alive(p), 60, f"worker {proc.pid} never became ready: {self.log(proc)}")
        return started

    def worker_id(self, proc: subprocess.Popen) -> str:
        return f"{socket.gethostname()}-{proc.pid}"

    def alive(self, proc: subprocess.Popen) -> bool:
        assert proc.poll() is None or proc.returncode == -9, self.log(proc)
        return self.redis.zscore(f"{self.name}:workers", self.worker_id(proc)) is not None

    def log(self, proc: subprocess.Popen) -> str:
        index = self.procs.index(proc)
        return (self.logs / f"worker-{index}.log").read_text()[-3000:]

    def metrics(self, proc: subprocess.Popen) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.ports[proc.pid]}/metrics", timeout=5).text

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(redis_url, queue_name, tmp_path) -> Iterator[Callable[..., Workers]]:
    made: list[Workers] = []

    def factory(jobs_dir: Path, **settings: object) -> Workers:
        logs = tmp_path / f"logs-{len(made)}"
        logs.mkdir()
        made.append(Workers(redis_url, queue_name, jobs_dir, logs, **settings))
        return made[-1]

    yield factory
    for w in made:
        w.stop()
