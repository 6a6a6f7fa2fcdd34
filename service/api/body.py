"""Request bodies from hostile or broken clients, as pure ASGI middleware: one answer per limit, whichever way the
body comes (``Content-Length`` or chunks), in the route family's error shape (``{"error": ...}`` under ``/v2``,
``{"detail": ...}`` elsewhere):

- **413** when the declared length or the bytes streamed so far pass the route's limit;
- **408** when the body stalls: each next part must come within ``body_timeout_s``, and after that grace the body
  must have come at least ``min_upload_bytes_per_s`` on average. Slow uploads cannot hold a place for ever;
- **499** (counted, never sent) when the client hangs up before its body is in: logged once at info, no traceback.

The guard answers itself, closes the connection (the rest of the body is never read), raises ``BodyRejected`` into
the app to stop it, and drops whatever the app sends after that. It tells ``MetricsMiddleware`` when a body is in
(``BODY_DONE``), so an upload takes an in-flight place only from then on; when none is free then, the guard answers
**503** with ``Retry-After`` (the body is read, but ``max_in_flight`` stays a true bound on the work in hand).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from service.api.responses import error_body, send_json
from service.config import Settings

log = logging.getLogger("service.api")
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file of a multipart upload
BODY_DONE = "emotion.body_done"  # scope key: a callable, called once when the body is in
OUTCOME = "emotion.outcome"  # scope key: the status to count for a request that got no answer
CLIENT_CLOSED = 499  # nginx's "client closed request": a metrics label, never sent
BODYLESS = {"GET", "HEAD", "OPTIONS", "DELETE"}


class BodyRejected(Exception):
    """Raised into the app once the guard has answered the request (413, 408) or its client has gone."""


@dataclass(frozen=True)
class BodyRules:
    """The limits a request body is held to: bytes (per path, else ``default_limit``) and pace."""

    default_limit: int
    timeout_s: float
    min_rate: int = 0  # bytes per second after the first ``timeout_s``; 0 = no rate check
    limits: dict[str, int] = field(default_factory=dict)

    def limit(self, scope) -> int:
        base = self.limits.get(scope["path"], self.default_limit)
        content_type = header(scope, b"content-type").lower()
        return base + (MULTIPART_SLACK if content_type.startswith(b"multipart/") else 0)


def body_rules(settings: Settings) -> BodyRules:
    """The settings' body limits: uploads (``limits``), videos and job clips (their own byte limits)."""
    limits = settings.limits
    return BodyRules(
        default_limit=limits.max_upload_bytes,
        timeout_s=limits.body_timeout_s,
        min_rate=limits.min_upload_bytes_per_s,
        limits={"/predict/video": settings.video.max_bytes, "/jobs/video": settings.queue.max_bytes},
    )


def header(scope, name: bytes) -> bytes:
    return next((v for k, v in scope.get("headers") or () if k.lower() == name), b"")


def has_body(scope) -> bool:
    """Whether the request declares a body: chunks, or a non-zero ``Content-Length`` (on a method that takes one)."""
    if scope["method"] in BODYLESS:
        return False
    if b"chunked" in header(scope, b"transfer-encoding").lower():
        return True
    return header(scope, b"content-length").strip() not in (b"", b"0")


class BodyGuardMiddleware:
    def __init__(self, app, rules: BodyRules) -> None:
        self.app, self.rules = app, rules

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        await _Upload(self.rules, scope, receive, send).run(self.app)


class _Upload:
    """One request's body on its way in: counted, timed, and refused or given up on at most once."""

    def __init__(self, rules: BodyRules, scope, receive, send) -> None:
        self.rules, self.scope, self.downstream, self.upstream = rules, scope, receive, send
        self.limit, self.started = rules.limit(scope), time.monotonic()
        declared = header(scope, b"content-length").strip()
        self.declared = int(declared) if declared.isdigit() else None
        self.received, self.done, self.answered, self.aborted, self.responding = 0, False, False, False, False

    async def run(self, app) -> None:
        if self.declared is not None and self.declared > self.limit:
            await self.refuse(413, self.too_large())
            return
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            if not (self.answered or self.aborted):
                raise  # the app's own failure: the error handlers and the log see it

    def too_large(self) -> str:
        slack = self.limit - self.rules.limits.get(self.scope["path"], self.rules.default_limit)
        return f"request body is larger than the {self.limit - slack} byte limit"

    async def receive(self):
        if self.done or self.answered or self.aborted:
            message = await self.downstream()
            if message["type"] == "http.disconnect" and not (self.answered or self.aborted or self.responding):
                self.scope[OUTCOME] = CLIENT_CLOSED  # hung up while waiting for its answer
            return message
        try:
            async with asyncio.timeout(self.wait_s()):  # a timer, not wait_for's task per part of the body
                message = await self.downstream()
        except TimeoutError:
            await self.refuse(408, self.stalled())
            raise BodyRejected from None
        if message["type"] == "http.disconnect":
            self.hung_up()
        elif message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                await self.refuse(413, self.too_large())
                raise BodyRejected
            if not message.get("more_body", False):
                self.done = True
                if not self.scope.get(BODY_DONE, _admitted)():
                    await self.refuse(503, "server is at capacity; retry shortly", [(b"retry-after", b"1")])
                    raise BodyRejected
        return message

    def wait_s(self) -> float:
        """How long the next part of the body may take: ``timeout_s``, less where the average rate needs it."""
        rules, now = self.rules, time.monotonic()
        if rules.min_rate <= 0:
            return rules.timeout_s
        due = self.started + rules.timeout_s + self.received / rules.min_rate
        return max(0.0, min(rules.timeout_s, due - now))

    def stalled(self) -> str:
        expected = f" of {self.declared}" if self.declared is not None else ""
        rate = f", or slower than {self.rules.min_rate} bytes/s" if self.rules.min_rate else ""
        seconds = time.monotonic() - self.started
        log.info(
            "%s %s: body stalled after %d%s bytes in %.1f s: 408, connection closed",
            self.scope["method"],
            self.scope["path"],
            self.received,
            expected,
            seconds,
        )
        return (
            f"the request body stopped arriving ({self.received}{expected} bytes in {seconds:.0f} s): each part "
            f"must come within {self.rules.timeout_s:g} s{rate}; send it again"
        )

    def hung_up(self) -> None:
        self.aborted = True
        self.scope[OUTCOME] = CLIENT_CLOSED
        expected = f" of {self.declared}" if self.declared is not None else ""
        log.info(
            "%s %s: the client closed the connection after %d%s bytes of its body (499)",
            self.scope["method"],
            self.scope["path"],
            self.received,
            expected,
        )

    async def refuse(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer now (unless the app already began to) and close the connection: its rest is never read."""
        self.answered = True
        if not self.responding:
            extra = [(b"connection", b"close"), *(headers or [])]
            await send_json(self.upstream, status, error_body(self.scope["path"], message), extra)

    async def send(self, message) -> None:
        if self.answered or self.aborted:
            return  # the guard has answered, or nobody is listening
        self.responding = self.responding or message["type"] == "http.response.start"
        await self.upstream(message)


def _admitted() -> bool:
    return True
