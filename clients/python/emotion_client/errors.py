"""What the client raises: one base class, the server's refusals with their status and detail, and transport
failures that outlasted the retries."""

from __future__ import annotations

from typing import Any


class EmotionError(Exception):
    """Anything the client raises on purpose."""


class EmotionAPIError(EmotionError):
    """The server answered with an error status; ``detail`` is its ``{"detail": ...}`` (or ``{"error": ...}``)."""

    def __init__(self, status: int, detail: Any, retry_after: float | None = None, method: str = "", url: str = ""):
        self.status, self.detail, self.retry_after = status, detail, retry_after
        self.method, self.url = method, url
        where = f" ({method} {url})" if method else ""
        super().__init__(f"{status}: {detail}{where}")


class EmotionConnectionError(EmotionError):
    """The server could not be reached (refused, reset, timed out), after the retries."""


class JobFailed(EmotionError):
    """A video job ended failed or cancelled; ``job`` is its last state."""

    def __init__(self, job: Any) -> None:
        self.job = job
        detail = job.error.detail if getattr(job, "error", None) is not None else "no detail"
        super().__init__(f"job {job.id} {job.status}: {detail}")


class StreamClosed(EmotionError):
    """A live session (``WS /stream``) ended other than by the client's ``close``: ``code`` is the WebSocket close
    code (1007 bad options, 1008 API key, 1009 frame too big, 1013 too many sessions, 1001 idle or stopping, 1006
    the connection was lost), ``reason`` the server's words."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code, self.reason = code, reason
        super().__init__(f"stream closed with {code}" + (f": {reason}" if reason else ""))
