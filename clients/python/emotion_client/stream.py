"""Live sessions on ``WS /stream``: frames in, per-frame results with track ids out (see ``stream_messages`` for the
contract). ``StreamSession``/``AsyncStreamSession`` are one session each (options, ``ready``, frames, results, the
summary, close codes turned into ``StreamClosed``); ``Stream``/``AsyncStream`` drive a session from an iterable of
frames, sending and receiving at once.

Why at once: the server is real time, not a queue. While it analyses one frame, newer frames replace older ones in a
one-frame mailbox and each result says how many were ``skipped``. A producer that waited for each reply before
sending the next frame would run at the round trip's pace and always show a frame one round trip old; sending on
its own thread (or task) keeps the newest frame at the server, and the server's dropping keeps latency flat.
``pace="lockstep"`` is the other choice, for recorded frames where every frame should be analysed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, TypeAdapter
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

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
    StreamOptions,
    StreamReady,
    StreamResult,
    StreamSummary,
    pack_frame,
)
from emotion_client.uploads import is_numpy_array

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


def encode_jpeg(image: Any, quality: int = JPEG_QUALITY) -> bytes:
    """A uint8 BGR (or gray) numpy image -> JPEG, with OpenCV when installed, else Pillow. JPEG, not the lossless
    PNG uploads use: a live frame goes many times a second, and size is what bounds the rate."""
    if str(image.dtype) != "uint8" or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"expected a uint8 H x W or H x W x 1/3 image array, got {image.dtype} {image.shape}")
    try:
        import cv2
    except ImportError:
        return _encode_jpeg_pillow(image, quality)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


def _encode_jpeg_pillow(image: Any, quality: int) -> bytes:
    import io

    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("sending numpy frames needs opencv-python or Pillow installed") from exc
    image = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    image = image[:, :, ::-1] if image.ndim == 3 else image  # BGR -> RGB
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def frame_bytes(frame: Frame) -> bytes:
    """An encoded image as it is, a path's bytes, or a numpy image as JPEG."""
    if isinstance(frame, bytes | bytearray | memoryview):
        return bytes(frame)
    if isinstance(frame, str | os.PathLike):
        return Path(frame).read_bytes()
    if is_numpy_array(frame):
        return encode_jpeg(frame)
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


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (CLOSE_LOST, "the connection was lost")


def _refused(target: StreamTarget, exc: Exception) -> EmotionError:
    """A handshake that failed: the server's HTTP answer as EmotionAPIError, anything else as unreachable."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        detail = response.body.decode(errors="replace") if response.body else response.reason_phrase
        wait = retry_after(response.headers.get("Retry-After"))
        return EmotionAPIError(response.status_code, detail, wait, "GET", target.url)
    return EmotionConnectionError(f"WS {target.url}: {type(exc).__name__}: {exc}")


def _expect_ready(message: StreamMessage) -> StreamReady:
    if not isinstance(message, StreamReady):
        raise EmotionError(f"the stream answered {message.type!r} before 'ready'")
    return message


def _retry_delay(target: StreamTarget, attempt: int, exc: EmotionError) -> float | None:
    """Seconds before opening again: after 1013 (too many sessions) or no connection, as HTTP calls retry."""
    retryable = isinstance(exc, EmotionConnectionError) or (
        isinstance(exc, StreamClosed) and exc.code == CLOSE_TRY_AGAIN
    )
    return target.retry.delay(attempt) if retryable else None


class _Tally:
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
        self.close_code, self.close_reason = _close_of(exc)
        if self.close_code != CLOSE_NORMAL and self.final is None:
            raise StreamClosed(self.close_code, self.close_reason) from None


def _control(kind: Literal["summary", "close"]) -> str:
    return StreamControl(type=kind).model_dump_json()


class StreamSession:
    """One blocking session: options sent, ``ready`` read on opening (``self.ready``). ``send`` a frame,
    ``receive`` the next answer, ``summary`` the running summary, ``close`` for the final one. ``send`` may run on
    another thread than ``receive``/``summary``/``close`` (what ``Stream`` does); those three share one reader."""

    def __init__(self, target: StreamTarget, options: StreamOptions) -> None:
        self.target, self._tally, self._lock = target, _Tally(), threading.Lock()
        attempt = 0
        while True:
            try:
                self._ws, self.ready = self._open(options)
                return
            except EmotionError as exc:
                if (delay := _retry_delay(target, attempt, exc)) is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _open(self, options: StreamOptions) -> tuple[SyncConnection, StreamReady]:
        self._tally = _Tally()
        try:
            # entered, not called bare: websockets 13..16 and 17+ (which warns on a bare connect) both take this
            self._ws = sync_connect(self.target.url, **self.target.connect_args()).__enter__()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise _refused(self.target, exc) from exc
        try:
            return self._ws, self._greet(options)
        except BaseException:
            self._ws.close()
            raise

    def _greet(self, options: StreamOptions) -> StreamReady:
        """Options sent, ``ready`` read; StreamClosed when the server refuses the session instead."""
        try:
            self._ws.send(options.model_dump_json(exclude_none=True))
        except ConnectionClosed as exc:  # refused at once (a wrong key, too many sessions)
            self._tally.ended(exc)
        try:
            ready = self._read(self.target.open_timeout)
        except TimeoutError:
            raise EmotionError(f"WS {self.target.url}: no 'ready' within {self.target.open_timeout:g} s") from None
        if ready is None:
            raise StreamClosed(self._tally.close_code or CLOSE_NORMAL, "closed before 'ready'")
        return _expect_ready(ready)

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def close_code(self) -> int | None:
        return self._tally.close_code

    @property
    def final(self) -> StreamSummary | None:
        return self._tally.final

    def send(self, frame: Frame, t: float | None = None) -> None:
        """Send a frame (encoded bytes, a path or a BGR numpy image) with its capture time ``t`` (seconds)."""
        self._send(frame_message(frame, t, self.ready.max_frame_bytes))

    def _send(self, message: str | bytes) -> None:
        try:
            with self._lock:
                self._ws.send(message)
        except ConnectionClosed as exc:
            raise StreamClosed(*_close_of(exc)) from None

    def _read(self, timeout: float | None = None) -> StreamMessage | None:
        try:
            return self._tally.seen(parse_message(self._ws.recv(timeout)))
        except ConnectionClosed as exc:
            self._tally.ended(exc)
            return None

    def receive(self, timeout: float | None = None) -> Answer | None:
        """The next result, error or summary; None once the session has ended (after the final summary).
        StreamClosed when the server ended it otherwise, TimeoutError after ``timeout`` seconds."""
        return self._tally.pending.popleft() if self._tally.pending else self._read(timeout)

    def summary(self, timeout: float | None = 30.0) -> StreamSummary:
        """The running summary (results that arrive first are kept for ``receive``)."""
        self._send(_control("summary"))
        while (message := self._read(timeout)) is not None:
            if isinstance(message, StreamSummary):
                return message
            self._tally.pending.append(message)
        if self._tally.final is None:
            raise StreamClosed(self._tally.close_code or CLOSE_NORMAL, "closed before the summary")
        return self._tally.final

    def finish(self) -> None:
        """Ask for the end (``close``): the final summary, then the close, follow on ``receive``. Sent once."""
        with self._lock:
            if self._tally.close_sent:
                return
            self._tally.close_sent = True
        self._send(_control("close"))

    def close(self, timeout: float | None = 30.0) -> StreamSummary | None:
        """End the session: ``close`` sent, answers read (kept for ``receive``) until the final summary and the
        close. Returns the final summary (None if the session ended without one)."""
        try:
            if self._tally.close_code is None:
                self.finish()
                while (message := self._read(timeout)) is not None:
                    self._tally.keep(message)
        except (StreamClosed, TimeoutError):
            pass
        finally:
            self._ws.close()
        return self._tally.final

    def abort(self) -> None:
        """Close the connection now, without a summary (unblocks a ``receive`` on another thread)."""
        self._ws.close()


def _is_answer_to_a_frame(message: Answer) -> bool:
    return isinstance(message, StreamResult) or (isinstance(message, StreamError) and message.seq is not None)


class _Sender(threading.Thread):
    """Sends ``frames`` on its own thread, then ``close``; keeps the first failure for the reader to raise."""

    def __init__(self, session: StreamSession, frames: Iterable[Frame], timestamps: Timestamps, pace: Pace) -> None:
        super().__init__(name="emotion-stream-sender", daemon=True)
        self.session, self.frames, self.timestamps, self.pace = session, frames, timestamps, pace
        self.failure: BaseException | None = None
        self._halt, self._turn = threading.Event(), threading.Semaphore(1)

    def run(self) -> None:
        try:
            start = time.monotonic()
            for i, frame in enumerate(self.frames):
                t = self.timestamps(i) if self.timestamps is not None else None
                if not self._wait_turn(i, start):
                    return
                self.session.send(frame, t)
            self.session.finish()
        except StreamClosed:
            pass  # the reader sees the close and raises it
        except BaseException as exc:  # handed to the reader's thread
            self.failure = exc
            self.session.abort()

    def _wait_turn(self, i: int, start: float) -> bool:
        """Wait for frame ``i``'s time (a rate) or for the previous frame's answer (lockstep); False when stopped."""
        if self.pace == "lockstep":
            self._turn.acquire()
        elif self.pace:
            self._halt.wait(max(0.0, start + i / self.pace - time.monotonic()))
        return not self._halt.is_set()

    def answered(self) -> None:
        self._turn.release()

    def stop(self) -> None:
        self._halt.set()
        self._turn.release()
        self.join(timeout=2.0)


class _StreamBase:
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


class Stream(_StreamBase):
    """Iterate for ``StreamResult``s (frames are sent meanwhile, on a thread); ``summary`` holds the final summary
    once iteration ends. Used as a context manager, leaving early still closes the session with its summary."""

    def __init__(self, open_session: Callable[[], StreamSession], frames: Iterable[Frame], **kw: Any) -> None:
        super().__init__(frames, **kw)
        self._open = open_session
        self._results: Iterator[StreamResult] | None = None

    def __iter__(self) -> Iterator[StreamResult]:
        self._start()
        self._results = self._run()
        return self._results

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._results is not None:
            self._results.close()  # type: ignore[attr-defined]

    def _run(self) -> Iterator[StreamResult]:
        session = self._open()
        self.ready = session.ready
        sender = _Sender(session, self.frames, self.timestamps, self.pace)
        sender.start()
        try:
            while (message := session.receive()) is not None:
                if _is_answer_to_a_frame(message):
                    sender.answered()
                if isinstance(message, StreamResult):
                    yield message
                elif isinstance(message, StreamError):
                    self.errors.append(message)
        finally:
            sender.stop()
            self.summary, self.close_code = session.close(), session.close_code
        if sender.failure is not None:
            raise sender.failure


class AsyncStreamSession:
    """``StreamSession`` for asyncio: ``await AsyncStreamSession.open(...)`` (or ``async with``), then the same
    methods, awaited."""

    def __init__(self, target: StreamTarget, ws: AsyncConnection, tally: _Tally) -> None:
        self.target, self._ws, self._tally = target, ws, tally
        self.ready: StreamReady

    @classmethod
    async def open(cls, target: StreamTarget, options: StreamOptions) -> AsyncStreamSession:
        attempt = 0
        while True:
            try:
                return await cls._open(target, options)
            except EmotionError as exc:
                if (delay := _retry_delay(target, attempt, exc)) is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    @classmethod
    async def _open(cls, target: StreamTarget, options: StreamOptions) -> AsyncStreamSession:
        try:
            ws = await async_connect(target.url, **target.connect_args())
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise _refused(target, exc) from exc
        session = cls(target, ws, _Tally())
        try:
            session.ready = await session._greet(options)
            return session
        except BaseException:
            await ws.close()
            raise

    async def _greet(self, options: StreamOptions) -> StreamReady:
        """Options sent, ``ready`` read; StreamClosed when the server refuses the session instead."""
        try:
            await self._ws.send(options.model_dump_json(exclude_none=True))
        except ConnectionClosed as exc:  # refused at once (a wrong key, too many sessions)
            self._tally.ended(exc)
        try:
            ready = await asyncio.wait_for(self._read(), self.target.open_timeout)
        except TimeoutError:
            raise EmotionError(f"WS {self.target.url}: no 'ready' within {self.target.open_timeout:g} s") from None
        if ready is None:
            raise StreamClosed(self._tally.close_code or CLOSE_NORMAL, "closed before 'ready'")
        return _expect_ready(ready)

    async def __aenter__(self) -> AsyncStreamSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def close_code(self) -> int | None:
        return self._tally.close_code

    @property
    def final(self) -> StreamSummary | None:
        return self._tally.final

    async def send(self, frame: Frame, t: float | None = None) -> None:
        await self._send(frame_message(frame, t, self.ready.max_frame_bytes))

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise StreamClosed(*_close_of(exc)) from None

    async def _read(self) -> StreamMessage | None:
        try:
            return self._tally.seen(parse_message(await self._ws.recv()))
        except ConnectionClosed as exc:
            self._tally.ended(exc)
            return None

    async def receive(self, timeout: float | None = None) -> Answer | None:
        if self._tally.pending:
            return self._tally.pending.popleft()
        return await asyncio.wait_for(self._read(), timeout)

    async def summary(self, timeout: float | None = 30.0) -> StreamSummary:
        await self._send(_control("summary"))
        while (message := await asyncio.wait_for(self._read(), timeout)) is not None:
            if isinstance(message, StreamSummary):
                return message
            self._tally.pending.append(message)
        if self._tally.final is None:
            raise StreamClosed(self._tally.close_code or CLOSE_NORMAL, "closed before the summary")
        return self._tally.final

    async def finish(self) -> None:
        if not self._tally.close_sent:
            self._tally.close_sent = True
            await self._send(_control("close"))

    async def close(self, timeout: float | None = 30.0) -> StreamSummary | None:
        try:
            if self._tally.close_code is None:
                await self.finish()
                while (message := await asyncio.wait_for(self._read(), timeout)) is not None:
                    self._tally.keep(message)
        except (StreamClosed, TimeoutError):
            pass
        finally:
            await self._ws.close()
        return self._tally.final

    async def abort(self) -> None:
        await self._ws.close()


async def _frames_of(frames: Iterable[Frame] | AsyncIterable[Frame]) -> AsyncIterator[Frame]:
    """An async iterable as it is; a sync one read on a worker thread, so a blocking source (a camera) does not
    stall the event loop."""
    if isinstance(frames, AsyncIterable):
        async for frame in frames:
            yield frame
        return
    iterator, end = iter(frames), object()
    while (frame := await asyncio.to_thread(next, iterator, end)) is not end:
        yield frame


class AsyncStream(_StreamBase):
    """``Stream`` for asyncio: ``async for result in stream``; frames (a sync or async iterable) are sent by a
    task meanwhile. ``async with`` closes the session with its summary when leaving early."""

    def __init__(
        self, open_session: Callable[[], Any], frames: Iterable[Frame] | AsyncIterable[Frame], **kw: Any
    ) -> None:
        super().__init__(frames, **kw)
        self._open = open_session
        self._results: Any = None
        self._turn = asyncio.Semaphore(1)
        self._failure: Exception | None = None

    def __aiter__(self) -> AsyncIterator[StreamResult]:
        self._start()
        self._results = self._run()
        return self._results

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._results is not None:
            await self._results.aclose()

    async def _run(self) -> AsyncIterator[StreamResult]:
        session: AsyncStreamSession = await self._open()
        self.ready = session.ready
        sender = asyncio.create_task(self._send_all(session))
        try:
            while (message := await session.receive()) is not None:
                if _is_answer_to_a_frame(message):
                    self._turn.release()
                if isinstance(message, StreamResult):
                    yield message
                elif isinstance(message, StreamError):
                    self.errors.append(message)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self.summary, self.close_code = await session.close(), session.close_code
        if self._failure is not None:
            raise self._failure

    async def _send_all(self, session: AsyncStreamSession) -> None:
        """The sender task; a failure (the frames, an encoding) closes the connection so the reader stops too."""
        start = time.monotonic()
        try:
            i = -1
            async for frame in _frames_of(self.frames):
                i += 1
                t = self.timestamps(i) if self.timestamps is not None else None
                if self.pace == "lockstep":
                    await self._turn.acquire()
                elif self.pace:
                    await asyncio.sleep(max(0.0, start + i / self.pace - time.monotonic()))
                await session.send(frame, t)
            await session.finish()
        except StreamClosed:
            pass  # the reader sees the close and raises it
        except Exception as exc:  # kept before closing: the reader may cancel this task while it closes
            self._failure = exc
            await session.abort()
