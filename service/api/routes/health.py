"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RegistryDep
from service.errors import ModelNotFound
from service.schemas import Health, ModelRef

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health)
async def live() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(registry: RegistryDep):
    """200 once the default model is loaded and warm; 503 before that or if it failed."""
    try:
        record = registry.resolve()
    except ModelNotFound as exc:
        return JSONResponse(Health(status="failed", detail=str(exc)).model_dump(), status_code=503)
    ref = ModelRef(name=record.entry.manifest.name, version=record.entry.manifest.version)
    if record.state == "loaded":
        return Health(status="ok", model=ref)
    status = "failed" if record.state == "failed" else "loading"
    return JSONResponse(Health(status=status, model=ref, detail=record.error).model_dump(), status_code=503)
