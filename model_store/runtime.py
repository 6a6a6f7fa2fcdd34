"""Backends that run a store entry: onnxruntime over ``model.onnx``, torch over a ``torch.export`` program.

Neither needs the training code: the ONNX graph and the exported program carry the architecture. A backend is a
callable ``model input -> outputs by name`` with the manifest's output names; add one by writing a class with
that shape and a line in ``BACKENDS``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from model_store.gate import gate_graph, rest_graph
from model_store.int8 import narrow_weights, narrowed, weight_bits
from model_store.linked import external_files, external_locations, open_program
from model_store.manifest import FileRole, LinkedFile, Manifest
from model_store.routing import RoutedGraph, find_routes, gray_rows, route_graph
from model_store.store import StoreEntry, StoreError, read_linked, verify_file

log = logging.getLogger(__name__)
Links = Sequence[tuple[LinkedFile, bytes]]  # other entries' weights files the entry reads, checked, in memory


class Runner(Protocol):
    backend: str
    device: str

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``NxCxHxW`` (or ``NxCxTxHxW``) float32 -> outputs by name."""
        ...


def session_options(threads: int = 0):
    """onnxruntime's options for one of the service's sessions: ``threads`` intra-op threads (0: its default).

    A session's pool threads spin-wait by default, between its calls too: that burns the cores the HTTP side, the
    detector and the other sessions need, so here they sleep. (Spinning only within a call,
    ``session.force_spinning_stop``, cut one graph's call by 14-16% alone, but not a request's answer: twenty-sixth
    round.)"""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # operators run one after another: no pool of threads across them
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRunner:
    """An ONNX graph on onnxruntime: ``model.onnx`` (``backend`` "onnx") or its int8 copy ("onnx-int8").

    A colour-routed ensemble's graph is cut into one graph per route (``model_store.routing``) and each batch is
    split by the gray test, so no node runs on zero rows; the answers are the one graph's. An entry with a gate
    (``model_store.gate``) also gets its gate graph and rest graphs: ``gate_probs`` and ``rest`` (``gated``)."""

    def __init__(
        self, path: Path, manifest: Manifest, device: str, threads: int = 0, links: Links = (), narrow: bool = False
    ) -> None:
        self.device, self.backend = device, "onnx"  # create_runner sets what it resolved ("onnx-int8": int8 graph)
        self.outputs = list(manifest.outputs)
        model = load_graph(path) if manifest.routed or manifest.gate or narrow else None
        own = model is not None and bool(external_locations(model)) and not links
        # an int8 graph's weights in 7 bits (model_store.int8): the sessions then read the narrowed copy
        changed = model is not None and narrow and narrow_weights(model) > 0
        # what the sessions multiply with: 7 once narrowed; else read off the graph where it is loaded (one
        # quantised with --reduce-range is in 7 bits already), else the published 8
        self.weight_bits = 7 if changed else (weight_bits(model) if model is not None else None) or 8
        if narrow and model is None:
            log.warning("%s: int8 weights left in 8 bits on a CPU that saturates them (no onnx package)", path.name)
        source = None if changed else str(path)

        def session(graph: str | bytes):  # a graph handed over as bytes has no folder to read its weights from
            return self._session(graph, path, manifest, threads, links, own and isinstance(graph, bytes))

        def sessions(graph, source: str | None = None, extra: str | None = None) -> Sessions:
            """One session over ``source`` (default: ``graph`` as bytes), or one per route of ``graph``."""
            cut = routed_graphs(graph) if graph is not None and manifest.routed else None
            if cut is None:
                return Sessions(self.outputs, (session(source or graph.SerializeToString()),), extra=extra)
            return Sessions(self.outputs, tuple(map(session, cut[1:])), cut[0], manifest, extra)

        self.full = sessions(model, source)
        self.routes: RoutedGraph | None = self.full.routes
        self.input_name = self.full.input_name
        self.gated = model is not None and manifest.gate is not None
        if self.gated:
            out = manifest.gate.output  # type: ignore[union-attr]
            self.gate = Sessions([out], (session(gate_graph(model, out).SerializeToString()),))
            self.rest_sessions = sessions(rest_graph(model, out), extra=out)

    def _session(
        self, model: str | bytes, path: Path, manifest: Manifest, threads: int, links: Links, own: bool = False
    ):
        import onnxruntime as ort

        options = session_options(threads)
        files = hand_over(options, path, manifest, links) if links or own else None
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda" else None
        session = ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
        del files
        return session

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.full(np.ascontiguousarray(batch, np.float32))

    def gate_probs(self, batch: np.ndarray) -> np.ndarray:
        """The gate member's calibrated probabilities for ``batch``."""
        return self.gate(np.ascontiguousarray(batch, np.float32))[self.gate.outputs[0]]

    def rest(self, batch: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        """The whole graph's outputs for ``batch`` given its rows' gate probabilities (``gate_probs``)."""
        return self.rest_sessions(np.ascontiguousarray(batch, np.float32), np.ascontiguousarray(probs, np.float32))

    def warmup(self, shape: tuple[int, ...]) -> None:
        """One call on zeros per session (a routed graph's zeros are a colour face), so no first request pays for
        lazy initialisation."""
        x = np.zeros((1, *shape), np.float32)
        self.full.warmup(x)
        if self.gated:
            self.rest(x, self.gate_probs(x))


class Sessions:
    """One graph's sessions: one, or one per route, each batch split by the gray test (``model_store.routing``).
    ``extra`` names a second input with a row per face (a rest graph's gate probabilities), split alike."""

    def __init__(
        self, outputs: list[str], sessions: tuple, routes: RoutedGraph | None = None, manifest=None, extra=None
    ) -> None:
        self.outputs, self.sessions, self.routes, self.extra = outputs, sessions, routes, extra
        self.input_name = sessions[0].get_inputs()[0].name
        if routes is not None:
            spec = manifest.input
            self.mean = np.asarray(spec.mean, np.float32)
            self.std = np.asarray(spec.std, np.float32)

    def _run(self, session, batch: np.ndarray, extra: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {self.input_name: batch} if extra is None else {self.input_name: batch, self.extra: extra}
        return dict(zip(self.outputs, session.run(self.outputs, feeds), strict=True))

    def __call__(self, batch: np.ndarray, extra: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if self.routes is None:
            return self._run(self.sessions[0], batch, extra)
        gray = gray_rows(batch, self.mean, self.std, self.routes.spread)
        if gray.all() or not gray.any():
            return self._run(self.sessions[0] if gray.all() else self.sessions[1], batch, extra)
        parts = [(gray, self.sessions[0]), (~gray, self.sessions[1])]
        return join_rows(
            len(batch), [(rows, self._run(s, batch[rows], None if extra is None else extra[rows])) for rows, s in parts]
        )

    def warmup(self, x: np.ndarray) -> None:
        for session in self.sessions:
            session.run(self.outputs, {self.input_name: x})


def join_rows(n: int, parts: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The outputs of ``n`` rows from parts that each scored some of them (``rows``: a mask or indices), every part
    with the same output names."""
    out = {}
    for name, first in parts[0][1].items():
        out[name] = np.empty((n, *first.shape[1:]), first.dtype)
        for rows, values in parts:
            out[name][rows] = values[name]
    return out


def load_graph(path: Path):
    """The graph at ``path`` (``onnx.ModelProto``, external data not loaded), or None without the ``onnx`` package
    (a dependency, but an install may lack it): the one graph then serves, with the same labels (no route split,
    no gate)."""
    try:
        import onnx
    except ImportError:
        log.info("%s: one graph, served whole (the onnx package, which cuts it, is not installed)", path)
        return None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and kin: the checksum matched, the bytes are no graph
        raise StoreError(f"{path.name} is not a readable ONNX graph: {exc}") from exc


def routed_graphs(model) -> tuple[RoutedGraph, bytes, bytes] | None:
    """The gray and colour route graphs of ``model`` (None when it is not routed as expected)."""
    routes = find_routes(model.graph)
    if routes is None:
        return None
    gray, colour = (route_graph(model, routes, kind).SerializeToString() for kind in (True, False))
    return routes, gray, colour


def hand_over(options, path: Path, manifest: Manifest, links: Links) -> tuple:
    """Give a session the bytes of the linked files and of the entry's own weights file: onnxruntime reads no
    external data outside the graph's folder. It copies them as the session is created; keep the returned
    buffers until then."""
    if not hasattr(options, "add_external_initializers_from_files_in_memory"):
        import onnxruntime as ort

        raise StoreError(
            f"{manifest.key}'s fp32 graph reads weights from files handed over in memory (another entry's, or its "
            "own for a route graph); that needs onnxruntime >= 1.23 "
            f"(installed: {ort.__version__}): upgrade it, or serve the int8 graph (backend onnx-int8)"
        )
    weights = manifest.file("weights")
    files = external_files(links, {weights.path: path.with_name(weights.path).read_bytes()} if weights else {})
    options.add_external_initializers_from_files_in_memory(*files)
    return files


# constants torch.export.load unpickles whatever their config says (torchbind and opaque objects)
_PICKLED_CONSTANT_PREFIXES = ("custom_obj_", "opaque_obj_")


def check_tensors_only(path: Path) -> None:
    """Refuse a ``torch.export`` archive that ``torch.export.load`` would unpickle arbitrary objects from.

    It unpickles with ``weights_only=False`` weights and constants marked ``use_pickle``, torchbind/opaque constants,
    and any ``.pt`` member (sample inputs, legacy payloads) that fails to load weights-only: it retries those
    unrestricted. Checking first keeps loading weights-only without patching ``torch.load`` for the process.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            _check_payload_configs(archive, path.name)
            _check_pt_members(archive, path.name)
    except zipfile.BadZipFile as exc:
        raise StoreError(f"{path.name} is not a torch.export archive: {exc}") from exc


def _check_payload_configs(archive: zipfile.ZipFile, name: str) -> None:
    configs = [n for n in archive.namelist() if n.endswith(("_weights_config.json", "_constants_config.json"))]
    if not configs:
        raise StoreError(f"{name} is not a torch.export archive of this format (no payload config)")
    for config in configs:
        entries = json.loads(archive.read(config)).get("config", {})
        pickled = [
            key
            for key, meta in entries.items()
            if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_PICKLED_CONSTANT_PREFIXES)
        ]
        if pickled:
            raise StoreError(f"{name} holds pickled payloads ({', '.join(pickled[:3])}); re-export it")


def _check_pt_members(archive: zipfile.ZipFile, name: str) -> None:
    """Every ``.pt`` member must load with ``weights_only=True`` (torch falls back to unrestricted otherwise)."""
    members = [n for n in archive.namelist() if n.endswith(".pt")]
    if not members:
        return
    import torch

    for member in members:
        try:
            torch.load(io.BytesIO(archive.read(member)), weights_only=True)
        except Exception as exc:
            reason = type(exc).__name__
            raise StoreError(f"{name}: {member} does not load weights-only ({reason}); re-export it") from exc


class TorchRunner:
    backend = "torch"

    def __init__(self, path: Path, manifest: Manifest, device: str, threads: int = 0, links: Links = ()) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        check_tensors_only(path)
        self._torch = torch
        weights = manifest.file("weights")
        try:
            archive = open_program(path, path.with_name(weights.path) if weights else None, links)
        except ValueError as exc:
            raise StoreError(f"{manifest.key}: {exc}") from exc
        self.module = torch.export.load(archive if isinstance(archive, io.BytesIO) else str(archive)).module()
        self.module = self.module.to(device)
        self.outputs = list(manifest.outputs)
        self.device = device

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device))
        out = out if isinstance(out, tuple | list) else (out,)
        return {name: t.float().cpu().numpy() for name, t in zip(self.outputs, out, strict=True)}


RunnerFactory = Callable[[Path, Manifest, str, int, Links], Runner]
# backend name -> (the store file it runs, its class)
BACKENDS: dict[str, tuple[FileRole, RunnerFactory]] = {
    "onnx": ("onnx", OnnxRunner),
    "onnx-int8": ("onnx_int8", OnnxRunner),
    "torch": ("torch_program", TorchRunner),
}
# where an entry has no file for the backend asked for (int8 is published per model; a routed ensemble has no torch
# program, since torch.export cannot run its one-kind batches), or the device is one the backend is not for (int8
# graphs are for CPUs), this one runs it
FALLBACK: dict[str, str] = {"onnx-int8": "onnx", "torch": "onnx"}
CPU_ONLY = {"onnx-int8"}
LINKED_ROLES = {"onnx", "torch_program"}  # files that may read their weights from model.safetensors (and links)


def resolved_backend(entry: StoreEntry, backend: str, device: str = "cpu") -> str:
    """The backend that runs ``entry`` when ``backend`` is asked for on ``device``: itself, or its fallback where
    the entry has no file for it or the device is not a CPU."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    missing = entry.manifest.file(BACKENDS[backend][0]) is None
    if backend in FALLBACK and (missing or (backend in CPU_ONLY and device != "cpu")):
        return FALLBACK[backend]
    return backend


def create_runner(
    entry: StoreEntry,
    backend: str = "onnx",
    device: str = "cpu",
    threads: int = 0,
    gate: bool = True,
    int8_weights: str = "auto",
) -> Runner:
    """The runner for ``entry`` on ``backend`` (or its fallback), after checking its file's size and sha256;
    ``gate=False`` cuts no gate graphs (their sessions would sit unused); ``int8_weights``: an int8 graph's weight
    bits, ``auto`` (7 where this CPU's int8 products saturate: ``model_store.int8``), ``7`` or ``8``."""
    resolved = resolved_backend(entry, backend, device)
    role, factory = BACKENDS[resolved]
    links: Links = ()
    if role in LINKED_ROLES:  # the ONNX graph and the torch program may read their weights from these
        if entry.manifest.file("weights") is not None:
            verify_file(entry, "weights")
        links = read_linked(entry)
    extra = (links,) if links else ()  # a backend added without link support still loads unlinked entries
    manifest = entry.manifest if gate else entry.manifest.model_copy(update={"gate": None})
    narrow = {"narrow": True} if resolved == "onnx-int8" and narrowed(int8_weights) else {}
    runner = factory(verify_file(entry, role), manifest, device, threads, *extra, **narrow)
    runner.backend = resolved  # what runs, for /models, /v2 and the logs
    return runner
