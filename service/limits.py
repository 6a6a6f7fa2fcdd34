"""Request-body limits enforced while the body streams in, before anything is parsed or spooled to disk."""

from __future__ import annotations

from service.metrics import _send_json

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 when ``Content-Length`` or the streamed body exceeds the limit for the path."""

    def __init__(self, app, default_limit: int, limits: dict[str, int]) -> None:
        self.app, self.default_limit, self.limits = app, default_limit, limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit) + MULTIPART_SLACK
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(
                send, 413, {"detail": f"request body is larger than the {limit - MULTIPART_SLACK} byte limit"}, []
            )
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
                await _send_json(
                    send, 413, {"detail": f"request body is larger than the {limit - MULTIPART_SLACK} byte limit"}, []
                )
