"""Prometheus exposition."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep, RegistryDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(m: MetricsDep, registry: RegistryDep) -> Response:
    """Every model the store holds now (new versions after a rescan too) has its series, at zero until used."""
    m.known_models((r.entry.manifest.key, r.entry.manifest.labels) for r in registry.all_records())
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)
