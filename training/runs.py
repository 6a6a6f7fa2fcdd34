"""Reading a training run folder back: its resolved config, a model built from it, its weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from model_store import FeatureSpec, InputSpec, Manifest, StoreEntry, parse_input, read_manifest
from model_store.linked import entry_state
from training.models import create_model, input_kwargs
from training.models.adapt import SHARED_INPUT

SLIM_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
TORCH_PROGRAM_NAME = "model.pt2"


def load_config(run: Path) -> dict:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a training run folder?")
    return json.loads(path.read_text())


def input_spec(cfg: dict) -> InputSpec | FeatureSpec:
    return parse_input(cfg["input"])


def build_model(cfg: dict) -> nn.Module:
    """An untrained model of the run's architecture, in eval mode."""
    spec = input_spec(cfg)
    return create_model(
        cfg["architecture"], len(cfg["labels"]), **input_kwargs(spec), **cfg["architecture_args"]
    ).eval()


def load_weights(model: nn.Module, path: Path, prefix: str = "") -> nn.Module:
    """Slim safetensors or a weights-only torch file (``best.pt``/``checkpoint.pt``: its ``model`` entry); with
    ``prefix``, only the tensors under it (one member of an ensemble's weights, say ``members.1.``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path} holds no tensors under {prefix!r}")
    model.load_state_dict(state)
    return model.eval()


def load_store_model(folder: Path) -> tuple[nn.Module, Manifest]:
    """A published model's architecture with its slim weights, in eval mode, and its manifest (for teachers and
    ensemble members)."""
    manifest = read_manifest(folder)
    cfg = {k: getattr(manifest, k) for k in ("architecture", "architecture_args", "labels")}
    model = build_model({**cfg, "input": manifest.input.model_dump()})
    model.load_state_dict(entry_state(StoreEntry(manifest, Path(folder))))  # its own weights and any it links
    return model.eval(), manifest


def require_compatible_labels(manifest: Manifest, labels: list[str], role: str) -> None:
    """A published model whose probabilities stand beside another's must have the same labels, in order."""
    if manifest.labels != labels:
        raise SystemExit(f"{role} {manifest.key} has labels {manifest.labels}, not {labels}")


def require_compatible(manifest: Manifest, labels: list[str], spec: InputSpec, role: str) -> None:
    """A published model used beside another on the same batches (an online teacher, an ensemble member) must have
    the same labels and read the same input, since one preprocessing feeds both."""
    require_compatible_labels(manifest, labels, role)
    mine, theirs = spec.model_dump(), manifest.input.model_dump()
    if any(mine[k] != theirs[k] for k in SHARED_INPUT):
        raise SystemExit(f"{role} {manifest.key} takes another input than {spec.height}x{spec.width}x{spec.channels}")


def example_input(spec: InputSpec | FeatureSpec, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random batch in the model's input layout (``NxCxHxW``, ``NxCxTxHxW`` for clip models, ``NxL`` for
    feature vectors)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.tensor_shape), generator=gen)
