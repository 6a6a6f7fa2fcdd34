"""Pure ASGI middleware: a note whether a multipart body was complete, and request metrics with load shedding
(request bodies are guarded in ``service/api/body.py``). None parses a body; those that answer use the route
family's error shape (``service/api/responses.py``)."""

from __future__ import annotations

import email.message
import functools
import time

from service.api.body import BODY_DONE, OUTCOME, has_body
from service.api.responses import error_body, send_json
from service.api.uploads import MULTIPART_CLOSED
from service.metrics import Metrics, Place


def multipart_boundary(scope) -> bytes | None:
    """The boundary of a ``multipart/form-data`` request, None for any other body."""
    return boundary_of(dict(scope.get("headers") or []).get(b"content-type", b""))


@functools.lru_cache(maxsize=256)
def boundary_of(content_type: bytes) -> bytes | None:
    """Cached, as email's parser is slow: many clients keep one boundary (and so one Content-Type) for every request."""
    header = content_type.decode("latin-1")
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
    """Counts and times every request by route template, and sheds load with 503 + ``Retry-After``.

    A request takes an in-flight place (``max_in_flight``) only once its body is in: until then it holds one of
    ``max_receiving`` places for uploads still arriving, so clients that stall mid-upload (each cut off by the body
    guard after ``body_timeout_s``) cannot crowd out requests that are ready to run. A new request is shed when the
    in-flight places are full, and an upload also when the receiving ones are; an upload whose body is in when the
    in-flight places are full is shed then (``admit``). Probes are neither shed nor counted,
    so a scrape or a health check never takes a place a prediction could have had. A client that hangs up before
    its answer is counted as 499 (``OUTCOME``), not by what the app then tried to send."""

    def __init__(self, app, metrics: Metrics, max_in_flight: int, max_receiving: int = 256) -> None:
        self.app, self.metrics = app, metrics
        self.max_in_flight, self.max_receiving = max_in_flight, max_receiving

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        probe, uploading = is_probe(scope["path"]), has_body(scope)
        if not probe and self.full(uploading):
            self.metrics.rejected.inc()
            message = "server is at capacity; retry shortly"
            await send_json(send, 503, error_body(scope["path"], message), [(b"retry-after", b"1")])
            return
        status, started, place = 500, time.perf_counter(), None

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if not probe:
            place = self.metrics.take_place(receiving=uploading)
            scope[BODY_DONE] = functools.partial(self.admit, place)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if place is not None:
                place.release()
            status = scope.get(OUTCOME, status)
            self.metrics.observe_request(scope["method"], route_template(scope), status, time.perf_counter() - started)

    def admit(self, place: Place) -> bool:
        """An upload whose body is in moves to an in-flight place, or is shed (503) when they are all taken."""
        if self.metrics.active >= self.max_in_flight:
            self.metrics.rejected.inc()
            return False
        place.body_in()
        return True

    def full(self, uploading: bool) -> bool:
        return self.metrics.active >= self.max_in_flight or (uploading and self.metrics.receiving >= self.max_receiving)
