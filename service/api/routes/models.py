"""What the store holds and what is loaded; rescanning the store without a restart."""

from fastapi import APIRouter

from model_store.int8 import narrowed
from model_store.predictor import gate_margin, mirror_margin, mirrored
from model_store.runtime import resolved_backend
from service.api.deps import ApiKeyDep, ModelVersion, RegistryDep
from service.registry import ModelRecord, ModelRegistry
from service.schemas import ErrorDetail, ModelInfo, ModelList, ReloadResponse, reload_response

router = APIRouter(prefix="/models", tags=["models"], dependencies=[ApiKeyDep])


def served_gate(record: ModelRecord, registry: ModelRegistry) -> float | None:
    """The loaded model's gate margin, or the one it will serve once loaded."""
    if record.loaded is not None:
        return record.loaded.predictor.gate_margin
    s, entry = registry.settings, record.entry
    return gate_margin(entry.manifest, s.gate, resolved_backend(entry, s.backend, registry.device), s.tta, s.tta_margin)


def served_weight_bits(record: ModelRecord, registry: ModelRegistry, backend: str) -> int | None:
    """An int8 graph's weight bits (``model_store.int8``): the loaded runner's, or the ones it will load with."""
    if backend != "onnx-int8":
        return None
    if record.loaded is not None:
        return getattr(record.loaded.predictor.runner, "weight_bits", 8)
    return 7 if narrowed(registry.settings.int8_weights) else 8


def model_info(record: ModelRecord, registry: ModelRegistry) -> ModelInfo:
    m = record.entry.manifest
    settings = registry.settings
    backend = resolved_backend(record.entry, settings.backend, registry.device)
    return ModelInfo(
        name=m.name,
        version=m.version,
        default=registry.is_default(record),
        task=m.task,
        architecture=m.architecture,
        labels=m.labels,
        input=m.input.model_dump(),
        valence_arousal=m.valence_arousal,
        backend=backend,
        device=registry.device,
        mirror_tta=mirrored(m, settings.tta),
        mirror_tta_margin=mirror_margin(m, settings.tta, settings.tta_margin),
        gate_margin=served_gate(record, registry),
        int8_weight_bits=served_weight_bits(record, registry, backend),
        state=record.state,
        error=record.error,
        size_bytes=sum(f.bytes for f in m.files),
        metrics=m.metrics,
        created=m.created,
        description=m.description,
    )


@router.get(
    "", response_model=ModelList, responses={401: {"description": "missing or wrong API key", "model": ErrorDetail}}
)
async def list_models(registry: RegistryDep) -> ModelList:
    """Every model version in the store, with its state (available, loading, loaded, failed)."""
    return ModelList(
        default=registry.settings.default_model, models=[model_info(r, registry) for r in registry.all_records()]
    )


@router.get(
    "/{name}",
    response_model=ModelInfo,
    responses={
        401: {"description": "missing or wrong API key", "model": ErrorDetail},
        404: {"description": "unknown model or version", "model": ErrorDetail},
    },
)
async def get_model(name: str, registry: RegistryDep, version: ModelVersion = None) -> ModelInfo:
    """One model (its newest version unless ``version`` is given)."""
    return model_info(registry.resolve(name, version), registry)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={401: {"description": "missing or wrong API key", "model": ErrorDetail}},
)
async def reload_models(registry: RegistryDep) -> ReloadResponse:
    """Rescan the store: new versions become servable at once, removed ones are unloaded (requests already using
    them finish on them), unchanged ones keep their state. ``GET /models`` shows the result."""
    return reload_response(await registry.reload("api"))
