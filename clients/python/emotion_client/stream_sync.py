"""The blocking live session (``StreamSession``) and the stream that drives one from an iterable of frames
(``Stream``), sending on a thread while results are read (``stream`` says why)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from emotion_client.errors import EmotionError, StreamClosed
from emotion_client.stream import (
    Answer,
    Frame,
    Pace,
    StreamBase,
    StreamTarget,
    Tally,
    Timestamps,
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


class StreamSession:
    """One blocking session: options sent, ``ready`` read on opening (``self.ready``). ``send`` a frame,
    ``receive`` the next answer, ``summary`` the running summary, ``close`` for the final one. ``send`` may run on
    another thread than ``receive``/``summary``/``close`` (what ``Stream`` does); those three share one reader."""

    def __init__(self, target: StreamTarget, options: StreamOptions) -> None:
        self.target, self._tally, self._lock = target, Tally(), threading.Lock()
        attempt = 0
        while True:
            try:
                self._ws, self.ready = self._open(options)
                return
            except EmotionError as exc:
                if (delay := retry_delay(target, attempt, exc)) is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _open(self, options: StreamOptions) -> tuple[SyncConnection, StreamReady]:
        self._tally = Tally()
        try:
            # entered, not called bare: websockets 13..16 and 17+ (which warns on a bare connect) both take this
            self._ws = sync_connect(self.target.url, **self.target.connect_args()).__enter__()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise refused(self.target, exc) from exc
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
        return expect_ready(ready)

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
            raise StreamClosed(*close_of(exc)) from None

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
        self._send(control("summary"))
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
        self._send(control("close"))

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


class Stream(StreamBase):
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
                if is_answer_to_a_frame(message):
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
