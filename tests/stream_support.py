"""Shared by the ``WS /stream`` tests: sessions through the ``websockets`` package's client, frames built from real
photos, what a closed session said, and a service run inside this process (for counting its threads and tasks)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from benchmarks.synth import background, paste
from emotion_client.stream_messages import STREAM_PATH, pack_frame
from service.config import Settings
from service.main import create_app
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[1]


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1) + STREAM_PATH


@contextmanager
def session(url: str, key: str | None = None, subprotocols: list[str] | None = None) -> Iterator[ClientConnection]:
    """A WebSocket to ``/stream`` (``key`` as the X-API-Key header), closed at the end."""
    headers = {"X-API-Key": key} if key is not None else None
    with connect(ws_url(url), additional_headers=headers, subprotocols=subprotocols, max_size=None) as ws:
        yield ws


def send_json(ws: ClientConnection, message: dict) -> None:
    ws.send(json.dumps(message))


def recv(ws: ClientConnection, timeout: float = 60.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def start(ws: ClientConnection, **options) -> dict:
    """Send options, return the ``ready`` message."""
    send_json(ws, {"type": "options", **options})
    ready = recv(ws)
    assert ready["type"] == "ready", ready
    return ready


def closed_with(ws: ClientConnection, timeout: float = 30.0, seen: list[dict] | None = None) -> tuple[int, str]:
    """Read until the server closes; its close code and reason (messages before the close go into ``seen``)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if seen is not None:
                seen.append(json.loads(message))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the connection ended without a close frame"
        return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError(f"the server did not close the session within {timeout} s")


def png(frame: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", frame)
    assert ok
    return buf.tobytes()


def frame_message(frame: np.ndarray, t: float | None = None) -> bytes:
    return pack_frame(png(frame), t)


def moving_face(photo: np.ndarray, n: int, step_px: int = 6, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """``n`` frames of ``photo`` (scaled to 200 px high) moving ``step_px`` right per frame across a canvas."""
    face = cv2.resize(photo, (round(photo.shape[1] * 200 / photo.shape[0]), 200))
    base = background(*size)
    frames = []
    for i in range(n):
        frame = base.copy()
        paste(frame, face, 40 + i * step_px, 120)
        frames.append(frame)
    return frames


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video, as OpenCV decodes it (the service decodes with OpenCV too)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def results_until(ws: ClientConnection, last_seq: int, timeout: float = 120.0) -> list[dict]:
    """Every message up to the result for frame ``last_seq``."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while not out or out[-1].get("seq") != last_seq or out[-1]["type"] != "result":
        out.append(recv(ws, timeout=max(0.1, deadline - time.monotonic())))
    return out


def metric_value(url: str, line_prefix: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(line_prefix)))


class InProcessService:
    """The app under uvicorn on a thread of this process: its threads and event-loop tasks can be counted."""

    def __init__(self, **settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(Settings(_env_file=None, **settings)), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())

    def __enter__(self) -> InProcessService:
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the in-process service did not become ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def tasks(self) -> int:
        """Tasks alive on the service's event loop (the one asking aside)."""

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=10)
