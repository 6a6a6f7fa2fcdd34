"""Prometheus metrics (one registry per app) and the ASGI middleware that counts requests and sheds load."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.active = 0  # requests being handled now (the gauge below, readable without prometheus internals)
        r = self.registry = CollectorRegistry()
        self.requests = Counter("emotion_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "emotion_request_duration_seconds",
            "End-to-end request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("emotion_requests_in_flight", "Requests being handled", registry=r)
        self.rejected = Counter("emotion_requests_rejected_total", "Requests shed with 503 over capacity", registry=r)
        self.inference = Histogram(
            "emotion_inference_duration_seconds",
            "Model call latency per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "emotion_inference_batch_rows",
            "Rows per model call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.faces = Counter("emotion_faces_detected_total", "Faces found by the detector", registry=r)
        self.model_loads = Counter("emotion_model_loads_total", "Successful model loads", ["model"], registry=r)
        self.model_load_failures = Counter(
            "emotion_model_load_failures_total", "Failed model loads", ["model"], registry=r
        )
        self.models_loaded = Gauge("emotion_models_loaded", "Models currently loaded", registry=r)
        self.video_frames_decoded = Counter("emotion_video_frames_decoded_total", "Video frames decoded", registry=r)
        self.video_frames_analyzed = Counter("emotion_video_frames_analyzed_total", "Video frames analysed", registry=r)
        self.video_seconds = Histogram(
            "emotion_video_processing_seconds",
            "Time to process one video",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def inference_observer(self, model: str) -> Callable[[int, float], None]:
        latency, rows = self.inference.labels(model=model), self.batch_size.labels(model=model)

        def observe(n: int, seconds: float) -> None:
            latency.observe(seconds)
            rows.observe(n)

        return observe


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every request by route template, and answers 503 with
    ``Retry-After`` when more than ``max_in_flight`` requests are already being handled."""

    def __init__(self, app, metrics: Metrics, max_in_flight: int) -> None:
        self.app, self.metrics, self.max_in_flight = app, metrics, max_in_flight

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exempt = scope["path"].startswith(("/health", "/metrics"))
        if not exempt and self.metrics.active >= self.max_in_flight:
            self.metrics.rejected.inc()
            await _send_json(send, 503, {"detail": "server is at capacity; retry shortly"}, [(b"retry-after", b"1")])
            return
        status, started = 500, time.perf_counter()

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.active += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.active -= 1
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
