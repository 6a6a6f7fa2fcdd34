"""``WS /stream``: a live session over one WebSocket (docs/stream.md has the contract); the analysis itself is
``service.stream``'s, this module only speaks WebSocket: accept, the limits and their close codes, the API key, a
receiver that reads frames into the one-slot mailbox and a worker that answers the newest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import NoReturn

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError

from emotion_client.stream_messages import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_INVALID_OPTIONS,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    KEY_PROTOCOL_PREFIX,
    STREAM_PATH,
    SUBPROTOCOL,
    StreamControl,
    StreamError,
    StreamOptions,
    unpack_frame,
)
from service.api.deps import key_matches
from service.config import Settings
from service.errors import ModelUnavailable, ServiceError
from service.metrics import Metrics
from service.stream import Frame, Mailbox, StreamSession, open_session

log = logging.getLogger("service.stream")
router = APIRouter()
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason


class Ending(Exception):
    """The session ends with ``code`` and ``reason``; ``summary``: a final summary first; ``drain``: the frame
    waiting in the mailbox is analysed first."""

    def __init__(self, code: int, reason: str = "", summary: bool = False, drain: bool = False) -> None:
        super().__init__(reason)
        self.code, self.reason, self.summary, self.drain = code, reason, summary, drain


class Gone(Exception):
    """The client closed the connection (or lost it): nothing more can be sent."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code or 1006


def reason_text(text: str) -> str:
    """A close reason within the 123 bytes a close frame holds."""
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def options_problem(exc: ValidationError) -> str:
    """The first thing wrong with an options message, in a sentence that fits a close reason."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "options"
    if error["type"] == "extra_forbidden":
        return f"unknown option {where!r}"
    return f"option {where!r}: {error['msg']}"


def parse_first(text: str) -> StreamOptions | StreamControl:
    """The first text message: options, or a control (then the defaults apply); Ending(1007) when malformed."""
    try:
        data = json.loads(text)
    except ValueError:
        raise Ending(CLOSE_INVALID_OPTIONS, "the options message is not JSON") from None
    if not isinstance(data, dict):
        raise Ending(CLOSE_INVALID_OPTIONS, "the options message must be a JSON object")
    try:
        if data.get("type") in ("summary", "close"):
            return StreamControl.model_validate(data)
        return StreamOptions.model_validate(data)
    except ValidationError as exc:
        raise Ending(CLOSE_INVALID_OPTIONS, options_problem(exc)) from None


class Connection:
    """One WebSocket's session, from the handshake to its close code."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.settings: Settings = ws.app.state.settings
        self.metrics: Metrics = ws.app.state.metrics
        self.limits = self.settings.stream
        self.session: StreamSession | None = None
        self.lock = asyncio.Lock()
        self.seq = 0  # binary messages received so far

    # --- the API key -------------------------------------------------------------------------------------------

    def handshake_key(self) -> str | None:
        """The key the handshake carried: the ``X-API-Key`` header, or a ``key.<key>`` subprotocol."""
        if (header := self.ws.headers.get("x-api-key")) is not None:
            return header
        offered = self.ws.scope.get("subprotocols") or []
        return next((p[len(KEY_PROTOCOL_PREFIX) :] for p in offered if p.startswith(KEY_PROTOCOL_PREFIX)), None)

    # --- messages ----------------------------------------------------------------------------------------------

    async def send(self, message: BaseModel) -> None:
        try:
            async with self.lock:
                await self.ws.send_text(message.model_dump_json())
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise Gone(getattr(exc, "code", None)) from None

    async def receive(self) -> dict:
        """The next message; Ending(1001) after ``idle_timeout_s`` without one, Ending(1009) past the size limit."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.limits.idle_timeout_s)
        except TimeoutError:
            raise Ending(CLOSE_GOING_AWAY, f"idle for {self.limits.idle_timeout_s:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise Gone(message.get("code"))
        size = len(message.get("bytes") or message.get("text") or "")
        if size > self.limits.max_frame_bytes:
            raise Ending(CLOSE_TOO_BIG, f"a message of {size} bytes; the limit is {self.limits.max_frame_bytes}")
        return message

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # the client may have gone already
            await self.ws.close(code, reason_text(reason))

    # --- the session -------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """The whole session; the close code it ended with (the client's own when it closed first)."""
        try:
            given = self.handshake_key()
            authorised = key_matches(self.settings, given)
            if not authorised and given is not None:
                raise Ending(CLOSE_POLICY, "wrong API key")
            first = await self.receive()
            session, leftover = await self.start(first, authorised)
            await self.serve(session, leftover)
        except Ending as end:
            if end.summary and self.session is not None:
                try:
                    await self.send(self.session.summary(final=True))
                except Gone as gone:
                    return gone.code
            await self.close(end.code, end.reason)
            return end.code
        except Gone as gone:
            return gone.code

    async def start(self, first: dict, authorised: bool) -> tuple[StreamSession, dict | None]:
        """The session the first message asks for (options, or the defaults before a frame or a control), and the
        message still to handle (None after options)."""
        text = first.get("text")
        parsed = parse_first(text) if text is not None else None
        options = parsed if isinstance(parsed, StreamOptions) else StreamOptions()
        if not (authorised or key_matches(self.settings, options.api_key)):
            given = "wrong API key" if options.api_key is not None else "no API key"
            raise Ending(CLOSE_POLICY, f"{given}: send X-API-Key, a key.<key> subprotocol or api_key in the options")
        app = self.ws.app.state
        try:
            session = await open_session(options, app.registry, app.pipelines, self.settings, self.metrics)
        except ModelUnavailable as exc:
            raise Ending(CLOSE_TRY_AGAIN, exc.detail) from None
        except ServiceError as exc:
            raise Ending(CLOSE_INVALID_OPTIONS, exc.detail) from None
        self.session = session
        await self.send(session.ready(self.limits.max_frame_bytes, self.limits.idle_timeout_s))
        return session, None if isinstance(parsed, StreamOptions) else first

    async def serve(self, session: StreamSession, leftover: dict | None) -> NoReturn:
        """Receiver and worker side by side until one ends the session (``Ending``, ``Gone``) or ``max_session_s``
        passes."""
        mailbox = Mailbox()
        worker = asyncio.create_task(self.work(session, mailbox))
        receiver = asyncio.create_task(self.read(session, mailbox, leftover))
        try:
            left = self.limits.max_session_s - session.clock()
            done, _ = await asyncio.wait({worker, receiver}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                ending = receiver.exception()
            elif worker in done:  # it only ends by itself when sending failed, or by a fault
                ending = worker.exception() or Gone(None)
            else:
                ending = Ending(CLOSE_GOING_AWAY, f"longer than {self.limits.max_session_s:g} s", summary=True)
            receiver.cancel()
            if isinstance(ending, Ending) and ending.drain and not worker.done():
                mailbox.close()
                await worker
            session.dropped(mailbox.discard())
            raise ending
        finally:
            for task in (worker, receiver):
                task.cancel()
            await asyncio.gather(worker, receiver, return_exceptions=True)

    async def read(self, session: StreamSession, mailbox: Mailbox, leftover: dict | None) -> None:
        """Frames into the mailbox, controls answered, until the client closes or a limit ends the session."""
        message = leftover
        while True:
            if message is None:
                message = await self.receive()
            if message.get("bytes") is not None:
                image, t = unpack_frame(message["bytes"])
                session.received()
                at = session.clock() if t is None else t  # a capture time is checked with the frame
                if mailbox.put(Frame(self.seq, image, at)):
                    session.dropped()
                self.seq += 1
            else:
                await self.control(session, message.get("text") or "")
            message = None

    async def control(self, session: StreamSession, text: str) -> None:
        try:
            control = StreamControl.model_validate_json(text)
        except ValidationError:
            await self.send(StreamError(detail='expected {"type": "summary"} or {"type": "close"}; options come first'))
            return
        if control.type == "close":
            raise Ending(CLOSE_NORMAL, "closed by the client", summary=True, drain=True)
        await self.send(session.summary())

    async def work(self, session: StreamSession, mailbox: Mailbox) -> None:
        """The newest frame, one at a time; ``skipped`` carries frames dropped before an unreadable one over."""
        skipped = 0
        while (got := await mailbox.get()) is not None:
            frame, dropped = got
            skipped += dropped
            answer = await session.analyse(frame, skipped)
            if answer.type == "result":
                skipped = 0
            await self.send(answer)


@router.websocket(STREAM_PATH)
async def stream(ws: WebSocket) -> None:
    """A live session: options, frames in, a result per analysed frame (docs/stream.md)."""
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    connection = Connection(ws)
    if not connection.metrics.open_stream(connection.limits.max_sessions):
        connection.metrics.stream_ended(CLOSE_TRY_AGAIN)
        log.info("stream refused: %d sessions live (close %d)", connection.limits.max_sessions, CLOSE_TRY_AGAIN)
        await connection.close(CLOSE_TRY_AGAIN, f"{connection.limits.max_sessions} sessions are live; try again")
        return
    code = CLOSE_INTERNAL
    try:
        code = await connection.run()
    except Exception:  # a fault of the server's: logged, and the client told so (never a dead connection)
        log.exception("stream session failed")
        await connection.close(CLOSE_INTERNAL, "server error")
    finally:
        connection.metrics.close_stream(code)
        session, counts = connection.session, None if connection.session is None else connection.session.counts
        log.info(
            "stream %s ended: %d received, %d analysed, %d dropped, %d bad frames (close %d)",
            "-" if session is None else session.id,
            *((0, 0, 0, 0) if counts is None else (counts.received, counts.analysed, counts.dropped, counts.bad)),
            code,
        )
