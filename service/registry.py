"""The model registry: every manifest in the store is known at start; weights load on first use.

One load per model even under concurrent first requests (a lock per model), sha256 checked before loading,
a warm-up call before the model serves, least-recently-used eviction over ``max_loaded_models``, and a model
whose files are missing or broken is marked ``failed`` while the others keep serving.

``reload()`` rescans the store (on ``POST /models/reload``, every ``reload_interval_s``, and after a peer server
process did: ``service/peers.py``): new versions become
servable, removed ones are unloaded, unchanged ones keep their state. A request that already holds a model finishes
on it even when it is unloaded meanwhile (its rows then run outside the closed batcher).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from model_store import (
    Manifest,
    Predictions,
    Predictor,
    Prepared,
    StoreEntry,
    StoreError,
    is_valid_name,
    newest,
    resolve_device,
    scan,
    version_key,
)
from service.batching import BatcherClosed, MicroBatcher, Outputs
from service.config import Settings
from service.errors import ModelNotFound, ModelUnavailable, WrongModelKind
from service.metrics import Metrics
from service.peers import POLL_S, ReloadSignal
from service.results import ReloadResult

log = logging.getLogger(__name__)
T = TypeVar("T")
State = Literal["available", "loading", "loaded", "failed"]


# What each input kind of model is for, in the words a client reads when it sent the wrong thing.
KIND_HINTS = {
    "face": "classifies faces; send images to /predict/face or /predict/image, videos to /predict/video",
    "clip": "classifies clips; send videos to /predict/video",
    "frame": "labels whole frames with attributes; send images to /predict/attributes, videos to /predict/video",
    "features": "classifies feature vectors; send them as JSON to /predict/features",
}


@dataclass(eq=False)
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

    @property
    def input_kind(self) -> str:
        """``face``, ``clip``, ``frame`` or ``features`` (model_store.manifest.TASKS)."""
        return self.predictor.kind.input

    def require(self, *kinds: str) -> None:
        """WrongModelKind unless the model takes one of these input kinds; the message says where it belongs."""
        if self.input_kind not in kinds:
            raise WrongModelKind(f"model {self.manifest.name!r} {KIND_HINTS[self.input_kind]}")

    def require_still(self) -> None:
        """Photos and face crops need a per-face model."""
        self.require("face")

    async def infer(self, prepared: Prepared, as_is: bool = False) -> Predictions:
        """Predictions for a prepared batch, its rows batched with other requests' rows; if the model was unloaded
        meanwhile (evicted, or removed from the store) the rows run on their own, so the request finishes on the
        version it started with. ``as_is``: rows a client prepared itself, which never get the mirror pass for
        unsure faces (``Predictor.run``)."""
        if not prepared.n:
            return self.predictor.empty()
        try:
            outputs = await self.batcher.submit(prepared.x, as_is)
        except BatcherClosed:
            eligible = np.full(len(prepared.x), not as_is)
            outputs = await asyncio.to_thread(self.predictor.run, prepared.x, eligible)
        return self.predictor.postprocess(outputs, prepared)

    async def infer_crops(self, crops: Sequence[np.ndarray]) -> Predictions:
        """Predictions for face crops of any size, resized to the model's input, normalised (and mirrored) before
        the model call and post-processed after it in the batcher's worker thread, so the caller's thread (a video
        scan, which is the critical path beside the decoder) pays for none of it."""
        if not len(crops):
            return self.predictor.empty()
        predictor, made = self.predictor, []

        def rows() -> np.ndarray:
            made.append(predictor.prepare(crops))
            return made[0].x

        def finish(outputs: dict[str, np.ndarray]) -> Predictions:
            return predictor.postprocess(outputs, made[0])

        return await self.run_work(rows, finish, len(crops) * (2 if predictor.paired else 1))

    async def run_work(self, rows: Callable[[], np.ndarray], finish: Callable[[Outputs], T], size: int) -> T:
        """``finish`` of the model's outputs for ``rows()`` (``size`` rows), both in the batcher's worker thread
        (``MicroBatcher.submit_work``); if the model was unloaded meanwhile, on their own in a thread, so the request
        finishes on the version it started with. No rows: no model call (``finish`` gets no outputs)."""
        try:
            return await self.batcher.submit_work(rows, finish, size)
        except BatcherClosed:
            return await asyncio.to_thread(self._on_its_own, rows, finish)

    def _on_its_own(self, rows: Callable[[], np.ndarray], finish: Callable[[Outputs], T]) -> T:
        x = rows()
        return finish(self.predictor.run(x) if len(x) else {})


@dataclass
class ModelRecord:
    entry: StoreEntry
    state: State = "available"
    error: str | None = None
    loaded: LoadedModel | None = None
    last_used: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    removed: bool = False  # gone from the store (a reload): whatever it loads is unloaded after use


def served_entries(root: Path) -> tuple[list[StoreEntry], dict[str, str]]:
    """The store's models; components (a face detector) are read by the pipelines and never served alone."""
    entries, invalid = scan(root)
    return [e for e in entries if not e.manifest.kind.component], invalid


ABSOLUTE_PATH = re.compile(r"(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\":]+[/\\])+([^\s/\\'\":]+)")


def without_paths(reason: str, entry: StoreEntry) -> str:
    """A load failure's reason as clients may see it (answers, /models, readiness): the entry's folder named by the
    model's ``name:version``, any other absolute path by its file name. The log keeps the whole message."""
    for folder in {str(entry.folder), str(entry.folder.resolve())}:
        reason = reason.replace(folder + os.sep, f"{entry.manifest.key}/").replace(folder, entry.manifest.key)
    return ABSOLUTE_PATH.sub(lambda m: m.group(1), reason)


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.device = resolve_device(settings.device)
        self.records: dict[str, dict[str, ModelRecord]] = {}
        self.invalid: dict[str, str] = {}
        self._reload_lock = asyncio.Lock()
        self._watchers: list[asyncio.Task] = []
        # several server processes: each follows the rescans the others announce (service/peers.py)
        self.peers = None if settings.reload_signal is None else ReloadSignal(settings.reload_signal)
        self.refresh()

    def refresh(self) -> None:
        """Read every manifest (no weights)."""
        entries, self.invalid = served_entries(self.settings.store_path)
        for folder, error in self.invalid.items():
            log.warning("ignoring %s: %s", folder, error)
        for entry in entries:
            self.records.setdefault(entry.manifest.name, {}).setdefault(entry.manifest.version, ModelRecord(entry))
        self.metrics.store_versions.set(len(entries))
        log.info("model store %s: %d model version(s)", self.settings.store_path, len(entries))

    def resolve(self, name: str | None = None, version: str | None = None) -> ModelRecord:
        """The record for ``name`` (default: the default model) at ``version`` (default: its newest public version,
        see ``model_store.newest``); an empty string counts as not given, and a space in a version is read as the
        ``+`` of a local version that an unencoded query string turned into one. Raises ModelNotFound."""
        name = name or self.settings.default_model
        versions = self.records.get(name) if is_valid_name(name) else None
        if not versions:
            raise ModelNotFound(f"unknown model {name[:64]!r}")
        version = version.replace(" ", "+") if version else newest(versions)
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
        loaded = record.loaded
        if loaded is not None:
            return loaded
        async with record.lock:
            if record.loaded is None:
                await self._load(record)
            loaded = record.loaded
        if loaded is None:
            raise ModelUnavailable(f"model {record.entry.manifest.key} failed to load: {record.error}")
        if record.removed:  # removed from the store while it loaded: this request still gets it
            await self.unload(record)
        else:
            await self._evict(keep=record)
        return loaded

    def _build(self, entry: StoreEntry) -> Predictor:
        s = self.settings  # Predictor.load raises StoreError on a missing file or checksum mismatch
        predictor = Predictor.load(
            entry,
            s.backend,
            self.device,
            s.inference_threads,
            tta=s.tta,
            tta_margin=s.tta_margin,
            gate=s.gate,
            int8_weights=s.int8_weights,
        )
        if s.warmup:
            predictor.warmup()
        return predictor

    async def _load(self, record: ModelRecord) -> None:
        key = record.entry.manifest.key
        record.state, started = "loading", time.perf_counter()
        try:
            predictor = await asyncio.to_thread(self._build, record.entry)
        except Exception as exc:  # a missing or unreadable artifact fails this model, never the service
            record.state, record.error = "failed", without_paths(str(exc) or type(exc).__name__, record.entry)
            self.metrics.model_load_failures.labels(model=key).inc()
            log.error("loading %s failed: %s", key, exc, exc_info=not isinstance(exc, StoreError))
            return
        observe = self.metrics.inference_observer(key)
        predictor.on_mirror_pass = self.metrics.mirror_pass_counter(key)
        predictor.on_gate = self.metrics.gate_counter(key)
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
        bits = " with 7-bit weights" if getattr(runner, "weight_bits", 8) == 7 else ""  # model_store.int8
        seconds = time.perf_counter() - started
        log.info("loaded %s (%s%s on %s) in %.2fs", key, runner.backend, bits, runner.device, seconds)

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

    def start(self) -> None:
        """Rescan the store every ``reload_interval_s`` (when set), and whenever a peer process did, until
        ``close``."""
        if self._watchers:
            return
        loop, interval = asyncio.get_running_loop(), self.settings.reload_interval_s
        if interval > 0:
            self._watchers.append(loop.create_task(self._watch(interval, lambda: True, "periodic")))
        if self.peers is not None:
            self._watchers.append(loop.create_task(self._watch(POLL_S, self.peers.changed, "peer")))

    async def _watch(self, interval: float, due: Callable[[], bool], trigger: str) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if due():
                    await self.reload(trigger)
            except Exception:  # a bad scan is logged; the next one may succeed
                log.exception("%s store rescan failed", trigger)

    async def reload(self, trigger: str = "api") -> ReloadResult:
        """Rescan the store: add new versions, unload and forget removed ones, replace changed ones (a manifest
        rewritten in place); unchanged versions keep their state. A new default version is loaded before this
        returns, so readiness does not drop."""
        async with self._reload_lock:
            entries, invalid = await asyncio.to_thread(served_entries, self.settings.store_path)
            default_before = self._default_record()
            found = {(e.manifest.name, e.manifest.version): e for e in entries}
            removed, updated = [], []
            for rec in self.all_records():
                key = (rec.entry.manifest.name, rec.entry.manifest.version)
                entry = found.get(key)
                if entry is None or entry.manifest != rec.entry.manifest:
                    (removed if entry is None else updated).append(key)
                    await self._forget(rec)
            added = [key for key in found if key[1] not in self.records.get(key[0], {})]
            for name, version in added:
                self.records.setdefault(name, {})[version] = ModelRecord(found[(name, version)])
            added = [key for key in added if key not in updated]
            self.invalid = invalid
            self.metrics.observe_reload(trigger, len(entries))
        if added or removed or updated:
            log.info("store rescan (%s): added %s, removed %s, updated %s", trigger, added, removed, updated)
        if self._default_record() not in (None, default_before):
            await self._warm_default()
        if trigger == "api" and self.peers is not None:
            self.peers.announce()
        return ReloadResult(sorted(added), sorted(removed), sorted(updated), invalid, len(entries))

    def _default_record(self) -> ModelRecord | None:
        try:
            return self.resolve()
        except ModelNotFound:
            return None

    async def _warm_default(self) -> None:
        try:
            await self.get()
        except Exception as exc:  # readiness reports it
            log.error("default model not loaded after the rescan: %s", exc)

    async def _forget(self, record: ModelRecord) -> None:
        """Drop a version that left the store; requests holding it finish on it."""
        manifest = record.entry.manifest
        record.removed = True
        versions = self.records.get(manifest.name, {})
        if versions.get(manifest.version) is record:
            del versions[manifest.version]
        if not versions:
            self.records.pop(manifest.name, None)
        await self.unload(record)

    async def close(self) -> None:
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._watchers = []
        for record in self.loaded_records():
            await self.unload(record)
