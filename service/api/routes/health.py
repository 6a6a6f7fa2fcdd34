"""Liveness and readiness, for an orchestrator to act on.

``/health/live`` answers 200 as long as the process serves HTTP at all, whatever the load: restarting a busy
service only makes the load worse. ``/health/ready`` answers 200 only when a request sent now would be served: the
default model is loaded, and there is room (an in-flight place, and a place for an upload to arrive). While every
place is taken it answers 503 ``saturated`` with ``Retry-After``, so a load balancer sends traffic elsewhere until
the service has room again; it never says ready while requests are being shed.
"""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import MetricsDep, RegistryDep, SettingsDep
from service.config import LimitsSettings
from service.errors import ModelNotFound
from service.metrics import Metrics
from service.schemas import Health, ModelRef

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health)
async def live() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


def saturation(metrics: Metrics, limits: LimitsSettings) -> str | None:
    """Why a new request would be shed now, or None when there is room."""
    if metrics.active >= limits.max_in_flight:
        return (
            f"{metrics.active} requests in flight, the limit (EMOTION_LIMITS__MAX_IN_FLIGHT) is {limits.max_in_flight}"
        )
    if metrics.receiving >= limits.max_receiving:
        return (
            f"{metrics.receiving} uploads still arriving, the limit (EMOTION_LIMITS__MAX_RECEIVING) is "
            f"{limits.max_receiving}"
        )
    return None


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(registry: RegistryDep, metrics: MetricsDep, settings: SettingsDep):
    """200 once the default model is loaded and warm and a new request would be served; 503 before that, if it
    failed, or while the service is saturated (it would shed the request)."""
    try:
        record = registry.resolve()
    except ModelNotFound as exc:
        return JSONResponse(Health(status="failed", detail=str(exc)).model_dump(), status_code=503)
    ref = ModelRef(name=record.entry.manifest.name, version=record.entry.manifest.version)
    if record.state == "loaded":
        if (busy := saturation(metrics, settings.limits)) is None:
            return Health(status="ok", model=ref)
        body = Health(status="saturated", model=ref, detail=busy).model_dump()
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    status = "failed" if record.state == "failed" else "loading"
    return JSONResponse(Health(status=status, model=ref, detail=record.error).model_dump(), status_code=503)
