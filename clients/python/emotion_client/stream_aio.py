"""The asyncio live session (``AsyncStreamSession``) and the stream that drives one from a sync or async iterable
of frames (``AsyncStream``), sending on a task while results are read (``stream`` says why)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from emotion_client.errors import EmotionError, StreamClosed
from emotion_client.stream import (
    Answer,
    Frame,
    StreamBase,
    StreamTarget,
    Tally,
    close_of,
    control,
    expect_ready,
    frame_message,
    is_answer_to_a_frame,
    parse_message,
    refused,
    retry_delay,
)
from emotion_client.stream_messages import (
    CLOSE_NORMAL,
    StreamError,
    StreamMessage,
    StreamOptions,
    StreamReady,
    StreamResult,
    StreamSummary,
)


class AsyncStreamSession:
    """``StreamSession`` for asyncio: ``await AsyncStreamSession.open(...)`` (or ``async with``), then the same
    methods, awaited."""

    def __init__(self, target: StreamTarget, ws: AsyncConnection, tally: Tally) -> None:
        self.target, self._ws, self._tally = target, ws, tally
        self.ready: StreamReady

    @classmethod
    async def open(cls, target: StreamTarget, options: StreamOptions) -> AsyncStreamSession:
        attempt = 0
        while True:
            try:
                return await cls._open(target, options)
            except EmotionError as exc:
                if (delay := retry_delay(target, attempt, exc)) is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    @classmethod
    async def _open(cls, target: StreamTarget, options: StreamOptions) -> AsyncStreamSession:
        try:
            ws = await async_connect(target.url, **target.connect_args())
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise refused(target, exc) from exc
        session = cls(target, ws, Tally())
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
        return expect_ready(ready)

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
            raise StreamClosed(*close_of(exc)) from None

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
        await self._send(control("summary"))
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
            await self._send(control("close"))

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


class AsyncStream(StreamBase):
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
                if is_answer_to_a_frame(message):
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
