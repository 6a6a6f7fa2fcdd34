"""Answers written straight to ASGI ``send`` by the middleware (before any route runs), in the route family's error
shape: the Open Inference Protocol's ``{"error": ...}`` under ``/v2``, ``{"detail": ...}`` everywhere else."""

from __future__ import annotations

import json


def error_body(path: str, message: str) -> dict[str, str]:
    return {"error": message} if path == "/v2" or path.startswith("/v2/") else {"detail": message}


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
