"""Several server processes (``python -m service --workers N``): each takes its share of the cores, a scrape of any
of them reports the sums over all (Prometheus' multi-process mode), and a store rescan asked of one reaches all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from service.config import Settings
from service.metrics import forget_ended
from service.peers import ReloadSignal
from service.processes import EARLY_S, per_process, watch
from tests.conftest import metric
from tests.live import SERVICE, clean_env, serve

FACE_ROUTE = 'emotion_requests_total{method="POST",route="/predict/face",status="200"}'


def test_processes_split_the_cores_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert per_process(Settings(_env_file=None), 1) == {}
    assert per_process(Settings(_env_file=None), 2) == {
        "EMOTION_INFERENCE_THREADS": "4",
        "EMOTION_BATCHING__WORKERS": "1",
    }
    assert per_process(Settings(_env_file=None), 16)["EMOTION_INFERENCE_THREADS"] == "1"
    chosen = Settings(_env_file=None, inference_threads=3, batching={"workers": 2})
    assert per_process(chosen, 2) == {}
    monkeypatch.setenv("EMOTION_INFERENCE_WORKERS", "3")  # the flat name of batching.workers
    assert "EMOTION_BATCHING__WORKERS" not in per_process(Settings(_env_file=None), 2)


def test_a_reload_announced_by_one_process_is_seen_once_by_each_other(tmp_path):
    path = tmp_path / "reload"
    path.touch()
    one, two, three = ReloadSignal(path), ReloadSignal(path), ReloadSignal(path)
    assert not two.changed()
    one.announce()
    assert two.changed() and not two.changed() and not one.changed()  # once each; not by the one that announced
    one.announce()
    one.announce()  # twice within a clock tick still reads as a change
    assert two.changed() and three.changed() and not three.changed()


@pytest.mark.parametrize("count", ["0", "-2", "65"])
def test_a_process_count_out_of_range_is_refused(count, capsys):
    from service.__main__ import get_args_parser

    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--workers", count])
    assert "from 1 to 64 server processes" in capsys.readouterr().err


class FakeProcess:
    def __init__(self, pid: int, alive: bool = True, exitcode: int | None = None) -> None:
        self.pid, self.alive, self.exitcode = pid, alive, exitcode

    def is_alive(self) -> bool:
        return self.alive


def test_the_supervisor_restarts_a_process_that_died_and_stops_on_one_that_could_not_start():
    stop, started = threading.Event(), []

    def start():
        started.append(FakeProcess(100 + len(started)))
        stop.set()  # one round of the watch is enough
        return started[-1], time.monotonic()

    old = time.monotonic() - 2 * EARLY_S
    processes = [(FakeProcess(1), old), (FakeProcess(2, alive=False, exitcode=-9), old)]
    assert watch(processes, start, stop) is None
    assert [p.pid for p, _ in processes] == [1, 100]  # the dead one replaced, in its place

    stop.clear()
    early = [(FakeProcess(3, alive=False, exitcode=1), time.monotonic())]
    reason = watch(early, start, stop)
    assert reason is not None and "server process 3 ended" in reason and "exit 1" in reason
    assert len(started) == 1  # not started again


def test_a_taken_port_stops_several_processes_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [*SERVICE[:-1], str(port), "--workers", "2"]
        command[command.index("--host") + 1] = "127.0.0.1"
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env(TMPDIR=str(tmp_path)))
    assert done.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert not list(tmp_path.glob("emotion-server-*"))  # nothing left behind


def test_gauges_of_processes_that_ended_are_forgotten(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone, alive = int(ended.stdout), os.getpid()
    for pid in (gone, alive):
        for name in (f"gauge_livesum_{pid}.db", f"counter_{pid}.db"):
            (tmp_path / name).write_bytes(b"")
    forget_ended(str(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"counter_{gone}.db", f"counter_{alive}.db", f"gauge_livesum_{alive}.db"])


# ``python -m service`` as on a platform where SO_REUSEPORT does not spread connections: uvicorn's supervisor
ELSEWHERE = [
    sys.executable,
    "-c",
    "import runpy, service.processes as p; p.OWN_SOCKETS = False; runpy.run_module('service', run_name='__main__')",
    *SERVICE[3:],
]


@pytest.mark.parametrize("command", [SERVICE, ELSEWHERE], ids=["own sockets", "uvicorn's supervisor"])
def test_two_processes_serve_and_any_scrape_counts_every_request(command, happy_face_bytes, tmp_path):
    """Each request on a connection of its own (so both processes take some); every scrape, whichever process
    answers it, reports all of them; the metrics folder goes when the server stops."""
    with serve([*command, "--workers", "2"], env={"TMPDIR": str(tmp_path)}) as url:
        folders = [p / "metrics" for p in tmp_path.glob("emotion-server-*")]
        assert len(folders) == 1

        def pids() -> set[str]:
            return {p.name.rsplit("_", 1)[1] for p in folders[0].glob("counter_*.db")}

        deadline = time.monotonic() + 60
        while len(pids()) < 2:  # each process writes its own series from its start
            assert time.monotonic() < deadline, "the second process never started"
            time.sleep(0.1)
        headers = {"Content-Type": "image/jpeg"}
        for _ in range(24):
            response = httpx.post(f"{url}/predict/face", content=happy_face_bytes, headers=headers)
            assert response.status_code == 200, response.text
        for _ in range(6):
            text = httpx.get(f"{url}/metrics").text
            assert metric(text, FACE_ROUTE) == 24
            assert metric(text, "emotion_requests_in_flight") == 0

        # a store rescan asked of one process: the other follows within a second or two
        assert httpx.post(f"{url}/models/reload").status_code == 200

        def reloads() -> tuple[float, float]:
            text = httpx.get(f"{url}/metrics").text
            return tuple(metric(text, f'emotion_model_reloads_total{{trigger="{t}"}}') for t in ("api", "peer"))

        deadline = time.monotonic() + 10
        while reloads() != (1, 1):
            assert time.monotonic() < deadline, f"the other process did not follow the rescan: {reloads()}"
            time.sleep(0.2)
    assert not folders[0].parent.exists()
