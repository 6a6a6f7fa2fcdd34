"""A live ``python -m service`` (real uvicorn, real sockets) for the tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVICE = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without EMOTION_* settings, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("EMOTION_")}, **extra}


@contextmanager
def serve(
    command: list[str] | None = None,
    timeout: float = 90.0,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[str]:
    """``command`` (default ``python -m service``) on 127.0.0.1 and a free port (its ``--host``/``--port`` values
    are replaced), with ``EMOTION_<KEY>`` settings and raw ``env`` variables; yields the base URL once
    ``/health/ready`` answers 200. With ``log``, its output (at info level) is kept in that file for the test."""
    args, port = list(command or SERVICE), free_port()
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    env = clean_env(
        EMOTION_LOG_LEVEL="info" if log else "warning",
        **(env or {}),
        **{f"EMOTION_{k.upper()}": v for k, v in settings.items()},
    )
    out = log.open("wb") if log else subprocess.PIPE
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if log:
        out.close()  # the child holds its own copy

    def output() -> str:
        return log.read_text()[-3000:] if log else proc.stdout.read().decode()

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, output()
            time.sleep(0.2)
        else:
            raise AssertionError(f"the server did not become ready in {timeout:.0f} s: {output()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
