"""Every registered architecture: forward shapes and ONNX parity against torch."""

from __future__ import annotations

import pytest
import torch

from training.export_onnx import export, parity
from training.models import create_model, get_model_cfg, input_kwargs, list_models
from training.runs import example_input


def small(name: str) -> torch.nn.Module:
    cfg = get_model_cfg(name)
    classes = 2 if cfg.task == "binary-attribute" else 7
    return create_model(name, classes, **input_kwargs(cfg.input)).eval(), classes


def test_registry_lists_every_model_kind():
    tasks = {get_model_cfg(name).task for name in list_models()}
    assert tasks == {
        "face-classification",
        "face-multitask",
        "clip-classification",
        "binary-attribute",
        "frame-attributes",
        "feature-classification",
    }


def test_unknown_architecture_error_lists_known_ones():
    with pytest.raises(KeyError, match=r"known: .*emotion_cnn"):
        create_model("nope", 7)


@pytest.mark.parametrize("name", list_models())
def test_forward_returns_declared_outputs(name):
    model, classes = small(name)
    cfg = get_model_cfg(name)
    with torch.inference_mode():
        out = model(example_input(cfg.input, 3))
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(cfg.outputs)
    assert outs[0].shape == (3, classes)
    if "valence_arousal" in cfg.outputs:
        assert outs[1].shape == (3, 2) and outs[1].abs().max() <= 1


@pytest.mark.parametrize("name", list_models())
def test_onnx_export_matches_torch(name, tmp_path):
    model, _ = small(name)
    spec = get_model_cfg(name).input
    path = export(model, example_input(spec, 2), list(get_model_cfg(name).outputs), tmp_path / "m.onnx")
    assert parity(model, path, example_input(spec, 5, seed=1)) < 1e-4
