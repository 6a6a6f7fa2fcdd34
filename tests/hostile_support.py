"""A live ``python -m service`` whose log is kept (the hostile-client tests read it), and raw-socket helpers for
bodies declared, chunked, stalled and cut off."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from tests.live import serve

BOUNDARY = "hostileb"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


@contextmanager
def live_service(log: Path, timeout: float = 120.0, **env: str) -> Iterator[int]:
    """``python -m service`` on a free port with ``env`` (``EMOTION_*`` names, ``TMPDIR``), its output in ``log``;
    yields the port once ready."""
    with serve(timeout=timeout, log=log, env=env) as url:
        yield int(url.rsplit(":", 1)[1])


def post(port: int, path: str, body: bytes | Iterable[bytes], content_type: str) -> tuple[int, dict]:
    """POST ``body`` (bytes: with ``Content-Length``; an iterable: chunked) on a fresh connection; status and JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        with suppress(BrokenPipeError, ConnectionResetError):  # answered before the whole body was read
            conn.request(
                "POST",
                path,
                body=body,
                headers={"Content-Type": content_type},
                encode_chunked=not isinstance(body, bytes),
            )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def chunks(data: bytes, size: int = 16384) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def multipart(payload: bytes, filename: str = "a.jpg") -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'.encode()
    return head + payload + f"\r\n--{BOUNDARY}--\r\n".encode()


def start_upload(port: int, path: str, declared: int, sent: bytes, content_type: str = FORM) -> socket.socket:
    """A connection that declares ``declared`` body bytes, sends ``sent`` and then nothing more."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + sent)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has let go of the connection (closed it, or answered and closed it)."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if not data:
        return True
    sock.setblocking(True)
    sock.settimeout(5)
    with suppress(OSError):
        while sock.recv(65536):  # an answer, then the close
            pass
    return True


def metric_sum(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted)
    )
