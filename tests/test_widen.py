"""training.widen: a wider emotion_cnn that starts as the narrow one, and whose copies can still drift apart."""

from __future__ import annotations

import argparse

import pytest
import torch

from model_store import find
from training.models import create_model
from training.models.face import EmotionCNN
from training.runs import load_store_model, load_weights
from training.widen import main, split_shares, unit_map, widen


def trained_like(width: int = 8, hidden: int = 16) -> EmotionCNN:
    """A small EmotionCNN with non-trivial BN statistics, so that copying them wrongly would show."""
    torch.manual_seed(0)
    model = EmotionCNN(7, 1, width, hidden)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_the_widened_net_computes_the_same_function():
    src = trained_like()
    wide = widen(src, width=12, hidden=24, seed=1)
    x = torch.randn(6, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(src(x), wide(x), atol=1e-5)
    assert wide.head[2].out_features == 24 and wide.features[0][0].out_channels == 12


def test_copies_of_a_unit_get_different_gradients():
    wide = widen(trained_like(), width=12, hidden=24, seed=1).train()
    wide(torch.randn(8, 1, 48, 48)).logsumexp(1).sum().backward()
    grad = wide.features[0][0].weight.grad  # channels 8..11 copy some of 0..7
    mapping = unit_map(8, 12, torch.Generator().manual_seed(1))
    copy, original = 8, int(mapping[8])
    assert not torch.allclose(grad[copy], grad[original])


def test_shares_of_one_unit_sum_to_one():
    mapping = torch.tensor([0, 1, 2, 0, 0, 2])
    shares = split_shares(mapping, 3, torch.Generator().manual_seed(0))
    totals = torch.zeros(3).index_add_(0, mapping, shares)
    assert torch.allclose(totals, torch.ones(3)) and (shares > 0).all()


def test_narrowing_is_refused():
    with pytest.raises(ValueError, match="at least the old one"):
        widen(trained_like(), width=4, hidden=16)


def test_cli_output_is_a_finetune_start_equal_to_the_shipped_model(tmp_path):
    entry = find("fer_emotion_cnn").folder
    out = tmp_path / "init.safetensors"
    main(argparse.Namespace(model=entry, width=40, hidden=320, seed=0, output=out))
    narrow, _ = load_store_model(entry)
    wide = load_weights(create_model("emotion_cnn", num_classes=7, width=40, hidden=320), out)
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(narrow(x), wide(x), atol=1e-4)
