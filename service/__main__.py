"""``python -m service [--host H] [--port P]``: run the API with uvicorn."""

from __future__ import annotations

import argparse
import os

import uvicorn

from service.config import settings_or_exit

WS_SLACK_BYTES = 64 * 1024  # over a frame's limit: its capture-time prefix, and text messages of any sane size


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Facial emotion service")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads its own models)")
    return p


def main(args: argparse.Namespace) -> None:
    os.environ["EMOTION_PORT"] = str(args.port)  # part of the default job namespace (EMOTION_QUEUE__NAMESPACE)
    settings = settings_or_exit()
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,
        # WS /stream: the protocol refuses (1009) a message far over the frame limit before reading it whole; one
        # just over it still reaches the route, which closes with 1009 and says the limit
        ws_max_size=settings.stream.max_frame_bytes + WS_SLACK_BYTES,
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
