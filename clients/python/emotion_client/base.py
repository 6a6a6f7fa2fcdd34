"""What the sync and async clients share: configuration, request building, the retry decision, answer reading."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from typing import Any, TypedDict

import httpx

from emotion_client import calls
from emotion_client.calls import Call, RetryPolicy
from emotion_client.errors import EmotionConnectionError
from emotion_client.stream import StreamTarget, stream_url

DEFAULT_URL = "http://127.0.0.1:8000"
# Failures where the request never reached the server: always safe to send again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The connection dropped mid-exchange: safe to send again only if repeating the call changes nothing.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class ClientOptions(TypedDict, total=False):
    timeout: float
    video_timeout: float
    retries: int
    backoff: float
    max_delay: float


def _version() -> str:
    """The installed distribution's version: ``emotion-client`` alone, or the server's wheel that carries it."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("emotion-client", "emotion-service"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "dev"


class ClientBase:
    """``url`` defaults to ``EMOTION_URL`` (else http://127.0.0.1:8000), ``api_key`` to ``EMOTION_API_KEY``
    (sent as ``X-API-Key``); ``timeout`` applies to each request, ``video_timeout`` to video uploads; ``retries``
    more attempts follow a 429/503 (after ``Retry-After``) or a failed connection, with exponential backoff."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        video_timeout: float = 600.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self.url = (url or os.environ.get("EMOTION_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get("EMOTION_API_KEY")
        self.headers = {"User-Agent": f"emotion-client/{_version()}", **({"X-API-Key": api_key} if api_key else {})}
        self.timeout, self.video_timeout = httpx.Timeout(timeout), httpx.Timeout(video_timeout, connect=timeout)
        self.retry = RetryPolicy(retries, backoff, max_delay)

    def _stream_target(self) -> StreamTarget:
        """Live sessions go to the same service, with the same key (``X-API-Key``), connect timeout and retries."""
        return StreamTarget(stream_url(self.url), dict(self.headers), self.timeout.connect or 60.0, self.retry)

    def _request(self, call: Call, stack: ExitStack) -> dict[str, Any]:
        """httpx request arguments for one attempt (a file body is opened afresh into ``stack``)."""
        kwargs: dict[str, Any] = {"params": call.params, "timeout": self.video_timeout if call.long else self.timeout}
        if call.body is not None:
            kwargs.update(call.body.open(stack))
        return kwargs

    def _after_failure(self, call: Call, attempt: int, exc: httpx.TransportError) -> float:
        """Seconds to wait before sending again after a transport error; raises when no retry is due."""
        retryable = isinstance(exc, NOT_SENT) or (call.idempotent and isinstance(exc, DROPPED))
        delay = self.retry.delay(attempt) if retryable else None
        if delay is None:
            raise EmotionConnectionError(f"{call.method} {self.url}{call.path}: {type(exc).__name__}: {exc}") from exc
        return delay

    def _after_answer(self, call: Call, attempt: int, response: httpx.Response) -> float | None:
        """None when ``response`` is the answer; else seconds to wait before a retry; raises on an error answer."""
        if response.status_code in call.ok:
            return None
        error = calls.api_error(
            response.status_code, response.content, response.headers, call.method, str(response.request.url)
        )
        delay = self.retry.delay(attempt, error.retry_after) if response.status_code in call.retry_statuses else None
        if delay is None:
            raise error
        return delay

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        return json.loads(response.content) if response.content else None
