"""Inference backends: onnxruntime over ``model.onnx`` or torch over a ``torch.export`` program (``model.pt2``).

Neither needs the training code: the ONNX graph and the exported program carry the architecture.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import numpy as np

from model_store import Manifest


class Runner(Protocol):
    backend: str
    device: str

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``NxCxHxW`` (or ``NxCxTxHxW``) float32 -> outputs by name."""
        ...


class OnnxRunner:
    backend = "onnx"

    def __init__(self, path: Path, manifest: Manifest, device: str, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads spin-wait by default: that burns the cores the HTTP side and the detector need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = list(manifest.outputs)
        self.device = device

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return dict(zip(self.outputs, values, strict=True))


@contextlib.contextmanager
def _strict_torch_load(torch):
    """``torch.export.load`` retries with ``weights_only=False`` when a file holds more than tensors; forbid that."""
    original = torch.load

    def strict(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = strict
    try:
        yield
    finally:
        torch.load = original


class TorchRunner:
    backend = "torch"

    def __init__(self, path: Path, manifest: Manifest, device: str, threads: int = 0) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        with _strict_torch_load(torch):
            self.module = torch.export.load(str(path)).module().to(device)
        self.outputs = list(manifest.outputs)
        self.device = device

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device))
        out = out if isinstance(out, tuple | list) else (out,)
        return {name: t.float().cpu().numpy() for name, t in zip(self.outputs, out, strict=True)}


FILE_ROLE = {"onnx": "onnx", "torch": "torch_program"}


def create_runner(backend: str, path: Path, manifest: Manifest, device: str, threads: int = 0) -> Runner:
    if backend == "onnx":
        return OnnxRunner(path, manifest, device, threads)
    if backend == "torch":
        return TorchRunner(path, manifest, device, threads)
    raise ValueError(f"unknown backend {backend!r}; use onnx or torch")
