"""Several server processes on one port (``python -m service --workers N``, ``EMOTION_WORKERS``): what each one's
settings change, the folder they share (metrics, reload signal), and a small supervisor.

Each process listens on a socket of its own bound to the same port (``SO_REUSEPORT``), so the kernel spreads new
connections over them. uvicorn's own supervisor hands one listening socket to every process, and whichever woke
first accepted a burst of connections: four keep-alive callers all landed on one process in 15 of 24 tries (the
server then ran on one core), against 2 of 24 with a socket each.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from service.config import Settings
from service.metrics import MULTIPROCESS_DIR

log = logging.getLogger("service.processes")
# Linux spreads new connections over the sockets bound to one port; elsewhere SO_REUSEPORT does not (macOS hands
# them all to one) or does not exist, and uvicorn's own supervisor, one socket for all, serves several processes
OWN_SOCKETS = sys.platform.startswith("linux")
CHECK_S = 0.5  # how often the supervisor looks for a process that died
STOP_S = 30.0  # how long a process has to finish its requests once told to stop
# a process that ends this soon after its start could not start (the port taken, a broken install): starting it
# again would fail the same way, so the server stops and says why instead of looping
EARLY_S = 20.0


def per_process(settings: Settings, workers: int) -> dict[str, str]:
    """What several server processes change in each one's settings, where those are not set: the cores split
    between them (``cores // workers`` runtime threads, one model call at a time), so they do not oversubscribe the
    host. Each process has its own interpreter lock: on two cores two processes served 30-50% more face crops a
    second than one (docs/speed.md)."""
    if workers <= 1:
        return {}
    split = {}
    if settings.inference_threads == 0:
        split["EMOTION_INFERENCE_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    if "workers" not in settings.batching.model_fields_set:
        split["EMOTION_BATCHING__WORKERS"] = "1"
    return split


def shared_folder() -> dict[str, str]:
    """A fresh folder the server's processes share, removed on exit: every process's metrics in it
    (``PROMETHEUS_MULTIPROC_DIR``, unless set), so a scrape of any process sees the sums over all; and the file
    through which they follow each other's store rescans (``EMOTION_RELOAD_SIGNAL``)."""
    folder = Path(tempfile.mkdtemp(prefix="emotion-server-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / "metrics").mkdir()
    (folder / "reload").touch()
    shared = {"EMOTION_RELOAD_SIGNAL": str(folder / "reload")}
    if MULTIPROCESS_DIR not in os.environ:
        shared[MULTIPROCESS_DIR] = str(folder / "metrics")
    return shared


def port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that shares the port with the other processes' (``SO_REUSEPORT``); not yet
    listening. Port 0 takes a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_one(host: str, port: int, options: dict[str, Any]) -> None:
    """One server process (spawned): its own listening socket on the shared port, then uvicorn on it."""
    uvicorn.Server(uvicorn.Config(**options)).run(sockets=[port_socket(host, port)])


def supervise(workers: int, host: str, port: int, options: dict[str, Any]) -> None:
    """Run ``workers`` server processes on ``host:port`` until SIGINT or SIGTERM (passed on to them, so each
    finishes its requests); one that dies is started again, one that could not start stops the server. The port is
    held by a socket of this process that never listens (so port 0 means one free port for all)."""
    try:
        holder = port_socket(host, port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    port = holder.getsockname()[1]
    context = multiprocessing.get_context("spawn")  # fresh interpreters: prometheus_client reads its folder at import

    def start() -> tuple[multiprocessing.Process, float]:
        process = context.Process(target=serve_one, args=(host, port, options))
        process.start()
        return process, time.monotonic()

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    processes = [start() for _ in range(workers)]
    log.info("%d server processes on %s:%d", workers, host, port)
    try:
        failed = watch(processes, start, stop)
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            process.join(STOP_S)
            if process.is_alive():
                process.kill()
        holder.close()
    if failed is not None:
        raise SystemExit(f"{failed}; see its output above")


def watch(processes: list, start, stop: threading.Event) -> str | None:
    """Until ``stop``: a process that died is started again (in place in ``processes``); one that died within
    ``EARLY_S`` of its start ends the watch with why."""
    while not stop.wait(CHECK_S):
        for i, (process, started) in enumerate(processes):
            if process.is_alive():
                continue
            lived = time.monotonic() - started
            if lived < EARLY_S:
                return f"server process {process.pid} ended {lived:.0f} s after it started (exit {process.exitcode})"
            log.warning("server process %d ended (exit code %s); starting another", process.pid, process.exitcode)
            processes[i] = start()
    return None
