"""A live model -> the files a store entry serves from: slim weights, ONNX (parity-checked against torch) and the
``torch.export`` program. Per-person fine-tuning and the weights import write store entries through this."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model_store import FeatureSpec, InputSpec, StoreEntry
from model_store.linked import entry_state
from model_store.manifest import FileRole
from training.export_onnx import export, parity
from training.export_slim import export_program, save_slim
from training.models import create_model, input_kwargs
from training.runs import ONNX_NAME, SLIM_NAME, TORCH_PROGRAM_NAME, example_input

log = logging.getLogger(__name__)


def write_artifacts(
    model: torch.nn.Module,
    spec: InputSpec | FeatureSpec,
    outputs: list[str],
    folder: Path,
    metadata: dict[str, str],
    torch_program: bool = True,
    tolerance: float = 1e-4,
) -> tuple[dict[FileRole, Path], float]:
    """Write the artifacts into ``folder``; returns them by role and the largest torch/onnxruntime difference
    (SystemExit over ``tolerance``: an export that changes the model must not be published)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    weights = folder / SLIM_NAME
    save_slim(model, weights, metadata)
    onnx = export(model, example_input(spec, 2), outputs, folder / ONNX_NAME, weights=weights)
    diff = parity(model, onnx, example_input(spec, 5, seed=1))
    if diff > tolerance:
        raise SystemExit(f"ONNX parity failed: max abs diff {diff:.2e} > tolerance {tolerance:.0e}")
    artifacts: dict[FileRole, Path] = {"weights": weights, "onnx": onnx}
    if torch_program:
        artifacts["torch_program"] = export_program(model, spec, folder / TORCH_PROGRAM_NAME, weights)
    log.info("exported %s: torch vs onnxruntime max abs diff %.2e", ", ".join(p.name for p in artifacts.values()), diff)
    return artifacts, diff


def load_entry_model(entry: StoreEntry) -> torch.nn.Module:
    """The store entry's architecture with its slim weights (checked against the manifest's sha256), in eval mode;
    SystemExit when the entry has no weights of a registered architecture (an ONNX-only import)."""
    m = entry.manifest
    if m.file("weights") is None and not m.links:
        raise SystemExit(
            f"{m.key} has no weights file (model.safetensors): only models of a registered architecture can be "
            "fine-tuned; import the checkpoint with --weights --architecture"
        )
    try:
        model = create_model(m.architecture, len(m.labels), **input_kwargs(m.input), **m.architecture_args)
    except KeyError as exc:
        raise SystemExit(f"{m.key}: {exc.args[0]}") from None
    model.load_state_dict(entry_state(entry))  # its own weights and any it links, each checked
    return model.eval()
