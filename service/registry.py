"""The model registry: every manifest in the store is known at start; weights load on first use.

One load per model even under concurrent first requests (a lock per model), sha256 checked before loading,
a warm-up call before the model serves, least-recently-used eviction over ``max_loaded_models``, and a model
whose files are missing or broken is marked ``failed`` while the others keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from model_store import (
    Manifest,
    Predictions,
    Predictor,
    Prepared,
    StoreEntry,
    StoreError,
    is_valid_name,
    resolve_device,
    scan,
    version_key,
)
from service.batching import MicroBatcher
from service.config import Settings
from service.errors import ModelNotFound, ModelUnavailable, WrongModelKind
from service.metrics import Metrics

log = logging.getLogger(__name__)
State = Literal["available", "loading", "loaded", "failed"]


@dataclass
class LoadedModel:
    """A Predictor whose model calls go through the micro-batcher (shared with concurrent requests)."""

    entry: StoreEntry
    predictor: Predictor
    batcher: MicroBatcher

    @property
    def manifest(self) -> Manifest:
        return self.entry.manifest

    @property
    def key(self) -> str:
        return self.manifest.key

    def require_still(self) -> None:
        """Photos and face crops need a per-image model."""
        if self.predictor.is_clip_model:
            raise WrongModelKind(f"model {self.manifest.name!r} classifies clips; send videos to /predict/video")

    async def infer(self, prepared: Prepared) -> Predictions:
        """Predictions for a prepared batch, its rows batched with other requests' rows."""
        if not prepared.n:
            return self.predictor.empty()
        return self.predictor.postprocess(await self.batcher.submit(prepared.x), prepared)


@dataclass
class ModelRecord:
    entry: StoreEntry
    state: State = "available"
    error: str | None = None
    loaded: LoadedModel | None = None
    last_used: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.device = resolve_device(settings.device)
        self.records: dict[str, dict[str, ModelRecord]] = {}
        self.invalid: dict[str, str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Read every manifest (no weights)."""
        entries, self.invalid = scan(self.settings.store_path)
        for folder, error in self.invalid.items():
            log.warning("ignoring %s: %s", folder, error)
        for entry in entries:
            self.records.setdefault(entry.manifest.name, {}).setdefault(entry.manifest.version, ModelRecord(entry))
        log.info("model store %s: %d model version(s)", self.settings.store_path, len(entries))

    def resolve(self, name: str | None = None, version: str | None = None) -> ModelRecord:
        """The record for ``name`` (default: the default model) at ``version`` (default: its newest); an empty
        string counts as not given. Raises ModelNotFound naming what is missing."""
        name = name or self.settings.default_model
        versions = self.records.get(name) if is_valid_name(name) else None
        if not versions:
            raise ModelNotFound(f"unknown model {name[:64]!r}")
        version = version or max(versions, key=version_key)
        if version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version[:64]!r}")
        return versions[version]

    def all_records(self) -> list[ModelRecord]:
        """Every model version, by name and newest version first."""
        return [
            rec
            for name in sorted(self.records)
            for _, rec in sorted(self.records[name].items(), key=lambda kv: version_key(kv[0]), reverse=True)
        ]

    def is_default(self, record: ModelRecord) -> bool:
        """Whether requests naming no model get this version."""
        return self.settings.default_model in self.records and record is self.resolve()

    def loaded_records(self) -> list[ModelRecord]:
        return [rec for rec in self.all_records() if rec.state == "loaded"]

    async def get(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The loaded model, loading it first if needed; raises ModelNotFound or ModelUnavailable."""
        record = self.resolve(name, version)
        record.last_used = time.monotonic()
        if record.loaded is not None:
            return record.loaded
        async with record.lock:
            if record.loaded is None:
                await self._load(record)
        if record.loaded is None:
            raise ModelUnavailable(f"model {record.entry.manifest.key} failed to load: {record.error}")
        await self._evict(keep=record)
        return record.loaded

    def _build(self, entry: StoreEntry) -> Predictor:
        s = self.settings  # Predictor.load raises StoreError on a missing file or checksum mismatch
        predictor = Predictor.load(entry, s.backend, self.device, s.inference_threads, tta=s.tta)
        if s.warmup:
            predictor.warmup()
        return predictor

    async def _load(self, record: ModelRecord) -> None:
        key = record.entry.manifest.key
        record.state, started = "loading", time.perf_counter()
        try:
            predictor = await asyncio.to_thread(self._build, record.entry)
        except Exception as exc:  # a missing or unreadable artifact fails this model, never the service
            record.state, record.error = "failed", str(exc) or type(exc).__name__
            self.metrics.model_load_failures.labels(model=key).inc()
            log.error("loading %s failed: %s", key, record.error, exc_info=not isinstance(exc, StoreError))
            return
        observe = self.metrics.inference_observer(key)
        batching = self.settings.batching
        batcher = MicroBatcher(
            predictor.run,
            batching.max_size,
            batching.max_wait_ms,
            observe,
            pending=lambda: self.metrics.active,
            workers=batching.workers,
        )
        record.loaded, record.state, record.error = LoadedModel(record.entry, predictor, batcher), "loaded", None
        self.metrics.model_loads.labels(model=key).inc()
        self.metrics.models_loaded.set(len(self.loaded_records()))
        runner = predictor.runner
        log.info("loaded %s (%s on %s) in %.2fs", key, runner.backend, runner.device, time.perf_counter() - started)

    async def _evict(self, keep: ModelRecord) -> None:
        """Unload least-recently-used models over the cap, never the default one nor ``keep``."""
        loaded = sorted(self.loaded_records(), key=lambda r: r.last_used)
        default = self.resolve() if self.settings.default_model in self.records else None
        while len(loaded) > self.settings.max_loaded_models:
            victim = next((r for r in loaded if r is not default and r is not keep), None)
            if victim is None:
                break
            loaded.remove(victim)
            await self.unload(victim)

    async def unload(self, record: ModelRecord) -> None:
        if record.loaded is not None:
            await record.loaded.batcher.close()
            log.info("unloaded %s", record.entry.manifest.key)
        record.loaded, record.state = None, "available"
        self.metrics.models_loaded.set(len(self.loaded_records()))

    async def close(self) -> None:
        for record in self.loaded_records():
            await self.unload(record)
