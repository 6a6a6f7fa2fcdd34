"""Builds the FastAPI app: settings, middleware, routers, lifespan."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import BaseRoute

from service.api import errors
from service.api.body import BodyGuardMiddleware, body_rules
from service.api.middleware import MetricsMiddleware, MultipartCloseMiddleware
from service.api.routes import (
    attributes,
    demo,
    docs,
    features,
    health,
    jobs,
    metrics,
    models,
    predict,
    stream,
    v2,
    video,
)
from service.config import Settings, get_settings
from service.jobs import create_jobs
from service.metrics import Metrics
from service.pipelines import build_pipelines
from service.registry import ModelRegistry

log = logging.getLogger("service")
# OpenAPI lists no WebSocket routes: the document says where the live one is described.
DESCRIPTION = (
    "Live streams: `WS /stream` takes frames over one WebSocket and answers each analysed frame with every face, its "
    "persistent track id and smoothed emotions (newest frame wins). Its messages are described by the AsyncAPI "
    "document at [`/asyncapi.json`](/asyncapi.json) and in the docs' Live streams page."
)


def _lifespan(settings: Settings, app_metrics: Metrics):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings, app.state.metrics = settings, app_metrics
        app.state.registry = registry = ModelRegistry(settings, app_metrics)
        registry.start()  # periodic store rescans, when EMOTION_RELOAD_INTERVAL_S is set
        app.state.pipelines = build_pipelines(settings, app_metrics)
        warm = asyncio.create_task(_load_default(registry))
        app.state.jobs = background = await create_jobs(settings, app_metrics, registry, app.state.pipelines)
        await background.start()
        yield
        await background.stop()
        app.state.pipelines.video.close()
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        await registry.close()

    return lifespan


async def _load_default(registry: ModelRegistry) -> None:
    try:
        await registry.get()
    except Exception as exc:
        log.error("default model not loaded: %s", exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_metrics = Metrics()
    app = FastAPI(
        title="Facial emotion service",
        version="1.0.0",
        summary="Apparent facial expression of every face in photos, face crops and videos.",
        description=DESCRIPTION,
        lifespan=_lifespan(settings, app_metrics),
        docs_url=None,  # service/api/routes/docs.py serves /docs and /redoc from installed files, not a CDN
        redoc_url=None,
    )
    app.add_middleware(MultipartCloseMiddleware)
    app.add_middleware(BodyGuardMiddleware, rules=body_rules(settings))
    limits = settings.limits
    app.add_middleware(
        MetricsMiddleware, metrics=app_metrics, max_in_flight=limits.max_in_flight, max_receiving=limits.max_receiving
    )
    errors.install(app)
    routers = [
        m.router for m in (health, models, predict, attributes, features, video, stream, jobs, v2, metrics, docs, demo)
    ]
    for router in routers:
        app.include_router(router)
    app_metrics.known_routes(served_routes([*app.routes, *(route for r in routers for route in r.routes)]))
    return app


def served_routes(routes: list[BaseRoute]) -> list[tuple[str, str, int]]:
    """``(method, path template, success status)`` of each route that has methods (the routers' own routes: the
    app lists included routers as one entry each), for the request metrics' zero series."""
    found = []
    for route in routes:
        methods = sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"})
        status = getattr(route, "status_code", None) or 200
        found += [(method, route.path, status) for method in methods if hasattr(route, "path")]
    return found
