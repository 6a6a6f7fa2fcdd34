"""One place that turns ``auto|cpu|cuda`` into a concrete device."""

from __future__ import annotations

import importlib.util


def cuda_available() -> bool:
    """True when torch sees a GPU, or onnxruntime offers its CUDA provider."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return False


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is an error."""
    if device not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return device
