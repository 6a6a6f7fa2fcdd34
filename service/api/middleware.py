"""Pure ASGI middleware: request-body limits enforced while the body streams in, a note whether a multipart body was
complete, and request metrics with load shedding. None parses a body; those that answer use the same
``{"detail": ...}`` JSON as every other error."""

from __future__ import annotations

import email.message
import json
import time

from service.api.uploads import MULTIPART_CLOSED
from service.metrics import Metrics

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file


class BodyTooLarge(Exception):
    pass


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


class BodyLimitMiddleware:
    """413 when ``Content-Length`` or the streamed body exceeds the limit for the path, before anything is parsed
    or spooled to disk."""

    def __init__(self, app, default_limit: int, limits: dict[str, int]) -> None:
        self.app, self.default_limit, self.limits = app, default_limit, limits

    def _too_large(self, limit: int) -> dict:
        return {"detail": f"request body is larger than the {limit - MULTIPART_SLACK} byte limit"}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit) + MULTIPART_SLACK
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, self._too_large(limit))
            return
        received, started = 0, False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json(send, 413, self._too_large(limit))


def multipart_boundary(scope) -> bytes | None:
    """The boundary of a ``multipart/form-data`` request, None for any other body."""
    header = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    if not header.lower().startswith("multipart/form-data"):
        return None
    parsed = email.message.Message()
    parsed["content-type"] = header
    boundary = parsed.get_param("boundary")
    return boundary.encode("latin-1", "replace") if isinstance(boundary, str) and boundary else None


class MultipartCloseMiddleware:
    """Notes in the scope (``MULTIPART_CLOSED``) whether a multipart body reached its closing delimiter
    (``--boundary--``). The form parser takes a body cut off before it as a form without its last parts, which
    would otherwise be reported as a missing field rather than as a truncated upload."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        boundary = multipart_boundary(scope) if scope["type"] == "http" else None
        if boundary is None:
            await self.app(scope, receive, send)
            return
        closing, tail = b"--" + boundary + b"--", b""
        scope[MULTIPART_CLOSED] = False

        async def watching_receive():
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request" and not scope[MULTIPART_CLOSED]:
                window = tail + message.get("body", b"")
                scope[MULTIPART_CLOSED], tail = closing in window, window[-len(closing) :]
            return message

        await self.app(scope, watching_receive, send)


def route_template(scope) -> str:
    """The matched route's path template (``/models/{name}``), so metrics have one series per route, not per URL;
    ``unmatched`` for paths no route serves."""
    route = scope.get("route")
    if route is None and "endpoint" in scope:  # plain Starlette routes (/openapi.json, /docs) do not set "route"
        routes = getattr(scope.get("app"), "routes", [])
        route = next((r for r in routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    return getattr(route, "path", None) or "unmatched"


PROBES = ("/health/", "/metrics", "/v2/health/")


def is_probe(path: str) -> bool:
    """Health checks and scrapes: they answer under any load and are not load themselves."""
    return path.startswith(PROBES)


class MetricsMiddleware:
    """Counts and times every request by route template, and answers 503 with ``Retry-After`` when more than
    ``max_in_flight`` requests are already being handled. Probes are neither shed nor counted in flight, so a
    scrape or a health check never takes a place a prediction could have had."""

    def __init__(self, app, metrics: Metrics, max_in_flight: int) -> None:
        self.app, self.metrics, self.max_in_flight = app, metrics, max_in_flight

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        probe = is_probe(scope["path"])
        if not probe and self.metrics.active >= self.max_in_flight:
            self.metrics.rejected.inc()
            await send_json(send, 503, {"detail": "server is at capacity; retry shortly"}, [(b"retry-after", b"1")])
            return
        status, started = 500, time.perf_counter()

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if not probe:
            self.metrics.request_started()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not probe:
                self.metrics.request_ended()
            self.metrics.observe_request(scope["method"], route_template(scope), status, time.perf_counter() - started)
