"""Live sessions on ``WS /stream`` (see ``stream_messages`` for the contract): what the blocking
(``stream_sync``) and asyncio (``stream_aio``) sessions share: the URL, connection settings, frame encoding, message
parsing, close codes turned into ``StreamClosed``, and the bookkeeping of a session and of a driven stream.

``StreamSession``/``AsyncStreamSession`` are one session each (options, ``ready``, frames, results, the summary);
``Stream``/``AsyncStream`` drive a session from an iterable of frames, sending and receiving at once.

Why at once: the server is real time, not a queue. While it analyses one frame, newer frames replace older ones in a
one-frame mailbox and each result says how many were ``skipped``. A producer that waited for each reply before
sending the next frame would run at the round trip's pace and always show a frame one round trip old; sending on
its own thread (or task) keeps the newest frame at the server, and the server's dropping keeps latency flat.
``pace="lockstep"`` is the other choice, for recorded frames where every frame should be analysed.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, TypeAdapter
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emotion_client.calls import RetryPolicy, retry_after
from emotion_client.errors import EmotionAPIError, EmotionConnectionError, EmotionError, StreamClosed
from emotion_client.stream_messages import (
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN,
    STREAM_PATH,
    SUBPROTOCOL,
    StreamControl,
    StreamError,
    StreamMessage,
    StreamReady,
    StreamResult,
    StreamSummary,
    pack_frame,
)
from emotion_client.uploads import encode_image, is_numpy_array

Frame = bytes | bytearray | memoryview | str | os.PathLike | Any  # Any: a BGR numpy image (numpy is optional)
Pace = float | Literal["lockstep"] | None
Timestamps = Callable[[int], float] | None
Answer = StreamResult | StreamError | StreamSummary
CLOSE_LOST = 1006  # no close frame: the connection dropped
MAX_MESSAGE = 64 * 2**20  # a long session's summary can pass websockets' 1 MiB default
JPEG_QUALITY = 90
_MESSAGES: TypeAdapter[StreamMessage] = TypeAdapter(Annotated[StreamMessage, Field(discriminator="type")])


class SessionOptions(TypedDict, total=False):
    """The session's options (``StreamOptions`` without the key, which goes as the ``X-API-Key`` header)."""

    model: str | None
    version: str | None
    max_faces: int | None
    min_face_size: int | None
    smoothing: float | None
    full_detect_every_s: float | None


@dataclass(frozen=True)
class StreamTarget:
    """Where and how a client opens sessions: the ws(s) URL, its headers (the API key), timeouts and retries."""

    url: str
    headers: dict[str, str]
    open_timeout: float
    retry: RetryPolicy

    def connect_args(self) -> dict[str, Any]:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "user-agent"}
        return {
            "additional_headers": headers,
            "user_agent_header": self.headers.get("User-Agent"),
            "subprotocols": [SUBPROTOCOL],
            "compression": None,  # JPEG does not deflate; compressing costs CPU on both sides for nothing
            "open_timeout": self.open_timeout,
            "max_size": MAX_MESSAGE,
        }


def stream_url(base: str) -> str:
    """The session URL of a service at ``base``: http -> ws, https -> wss, its path kept, ``/stream`` added."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"the service URL must be http(s)://host[:port][/path], not {base!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + STREAM_PATH, "", ""))


def frame_bytes(frame: Frame) -> bytes:
    """An encoded image as it is, a path's bytes, or a numpy image as JPEG."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return bytes(frame)
    if isinstance(frame, str | os.PathLike):
        return Path(frame).read_bytes()
    if is_numpy_array(frame):
        return encode_image(frame, "jpeg", JPEG_QUALITY)
    raise TypeError(f"a frame is encoded image bytes, a path or a numpy image, not {type(frame).__name__}")


def frame_message(frame: Frame, t: float | None, max_bytes: int | None) -> bytes:
    """The binary message for ``frame`` (its capture time ``t`` in front); a frame the server would refuse with
    1009, ending the session, is refused here instead."""
    message = pack_frame(frame_bytes(frame), t)
    if max_bytes is not None and len(message) > max_bytes:
        raise ValueError(f"a frame of {len(message)} bytes is over the server's max_frame_bytes ({max_bytes})")
    return message


def parse_message(data: str | bytes) -> StreamMessage:
    try:
        return _MESSAGES.validate_json(data)
    except ValueError as exc:
        raise EmotionError(f"unexpected message on the stream: {str(data)[:200]!r}") from exc


def close_of(exc: ConnectionClosed) -> tuple[int, str]:
    return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (CLOSE_LOST, "the connection was lost")


def refused(target: StreamTarget, exc: Exception) -> EmotionError:
    """A handshake that failed: the server's HTTP answer as EmotionAPIError, anything else as unreachable."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        detail = response.body.decode(errors="replace") if response.body else response.reason_phrase
        wait = retry_after(response.headers.get("Retry-After"))
        return EmotionAPIError(response.status_code, detail, wait, "GET", target.url)
    return EmotionConnectionError(f"WS {target.url}: {type(exc).__name__}: {exc}")


def expect_ready(message: StreamMessage) -> StreamReady:
    if not isinstance(message, StreamReady):
        raise EmotionError(f"the stream answered {message.type!r} before 'ready'")
    return message


def retry_delay(target: StreamTarget, attempt: int, exc: EmotionError) -> float | None:
    """Seconds before opening again: after 1013 (too many sessions) or no connection, as HTTP calls retry."""
    retryable = isinstance(exc, EmotionConnectionError) or (
        isinstance(exc, StreamClosed) and exc.code == CLOSE_TRY_AGAIN
    )
    return target.retry.delay(attempt) if retryable else None


class Tally:
    """What both session kinds track: messages read ahead (while waiting for a summary), the final summary, the
    close code."""

    def __init__(self) -> None:
        self.pending: deque[Answer] = deque()
        self.final: StreamSummary | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_sent = False

    def seen(self, message: StreamMessage) -> StreamMessage:
        if isinstance(message, StreamSummary) and message.final:
            self.final = message
        return message

    def keep(self, message: StreamMessage) -> None:
        """Hold an answer read while closing for a later ``receive`` (the final summary is returned instead)."""
        if not (isinstance(message, StreamSummary) and message.final):
            self.pending.append(message)

    def ended(self, exc: ConnectionClosed) -> None:
        """The session is over: fine after the client's close or a final summary; else StreamClosed."""
        self.close_code, self.close_reason = close_of(exc)
        if self.close_code != CLOSE_NORMAL and self.final is None:
            raise StreamClosed(self.close_code, self.close_reason) from None


def control(kind: Literal["summary", "close"]) -> str:
    return StreamControl(type=kind).model_dump_json()


def is_answer_to_a_frame(message: Answer) -> bool:
    return isinstance(message, StreamResult) or (isinstance(message, StreamError) and message.seq is not None)


class StreamBase:
    """What both driven streams expose: ``ready`` once open, ``summary`` (the final one) after the last result,
    ``errors`` (frames the server could not read), ``close_code``."""

    def __init__(self, frames: Any, timestamps: Timestamps, pace: Pace) -> None:
        if pace is not None and pace != "lockstep" and not (isinstance(pace, int | float) and pace > 0):
            raise ValueError(f"pace is frames per second (> 0), 'lockstep' or None, not {pace!r}")
        self.frames, self.timestamps, self.pace = frames, timestamps, pace
        self.ready: StreamReady | None = None
        self.summary: StreamSummary | None = None
        self.errors: list[StreamError] = []
        self.close_code: int | None = None
        self._started = False

    def _start(self) -> None:
        if self._started:
            raise RuntimeError("a stream runs once: call stream() again for another session")
        self._started = True
