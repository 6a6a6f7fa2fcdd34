"""``python -m service [--host H] [--port P]``: run the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from service.config import MAX_PROCESSES, settings_or_exit
from service.processes import OWN_SOCKETS, per_process, shared_folder, supervise

WS_SLACK_BYTES = 64 * 1024  # over a frame's limit: its capture-time prefix, and text messages of any sane size


def process_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"{count}: from 1 to {MAX_PROCESSES} server processes")
    return count


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Facial emotion service")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=process_count,
        help="server processes (default EMOTION_WORKERS, 1): each loads its own models and takes its share of the "
        "cores; /metrics sums them all",
    )
    return p


def main(args: argparse.Namespace) -> None:
    os.environ["EMOTION_PORT"] = str(args.port)  # part of the default job namespace (EMOTION_QUEUE__NAMESPACE)
    settings = settings_or_exit()
    workers = args.workers or settings.workers
    options = {
        "app": "service.main:create_app",
        "factory": True,
        "log_level": settings.log_level,
        "access_log": False,
        # WS /stream: the protocol refuses (1009) a message far over the frame limit before reading it whole; one
        # just over it still reaches the route, which closes with 1009 and says the limit
        "ws_max_size": settings.stream.max_frame_bytes + WS_SLACK_BYTES,
    }
    if workers > 1:
        os.environ.update({**per_process(settings, workers), **shared_folder()})  # read by each process's settings
    if workers == 1 or not OWN_SOCKETS:
        uvicorn.run(host=args.host, port=args.port, workers=workers, **options)
        return
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervise(workers, args.host, args.port, options)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
