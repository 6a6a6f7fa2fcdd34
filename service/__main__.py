"""``python -m service [--host H] [--port P]``: run the API with uvicorn."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from service.config import Settings, settings_or_exit
from service.metrics import MULTIPROCESS_DIR

WS_SLACK_BYTES = 64 * 1024  # over a frame's limit: its capture-time prefix, and text messages of any sane size


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Facial emotion service")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        help="server processes (default EMOTION_WORKERS, 1): each loads its own models and takes its share of the "
        "cores; /metrics sums them all",
    )
    return p


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


def main(args: argparse.Namespace) -> None:
    os.environ["EMOTION_PORT"] = str(args.port)  # part of the default job namespace (EMOTION_QUEUE__NAMESPACE)
    settings = settings_or_exit()
    workers = args.workers or settings.workers
    if workers > 1:
        os.environ.update({**per_process(settings, workers), **shared_folder()})  # read by each process
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level=settings.log_level,
        access_log=False,
        # WS /stream: the protocol refuses (1009) a message far over the frame limit before reading it whole; one
        # just over it still reaches the route, which closes with 1009 and says the limit
        ws_max_size=settings.stream.max_frame_bytes + WS_SLACK_BYTES,
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
