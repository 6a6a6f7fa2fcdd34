"""Narrowing a dlib face ResNet between its blocks' convs (``training.prune``): pure tensor checks, no data."""

from __future__ import annotations

import pytest
import torch

from training.models.dlib_resnet import Block, DlibFaceResNet, inner_channels
from training.prune import inner_activity, keep_channels, narrow_block, prune


def test_inner_widths_are_multiples_of_eight_and_checked():
    assert [inner_channels(c, 0.5) for c in (32, 64, 128, 256)] == [16, 32, 64, 128]
    assert inner_channels(32, 0.1) == 8 and inner_channels(64, 1.0) == 64
    with pytest.raises(ValueError, match="inner"):
        inner_channels(64, 0)


def test_a_narrow_net_has_fewer_inner_channels_and_the_same_outputs_shape():
    wide, narrow = DlibFaceResNet(7), DlibFaceResNet(7, inner=0.5)
    assert narrow.blocks[0].conv1.out_channels == 16 and narrow.blocks[0].conv2.out_channels == 32
    assert sum(p.numel() for p in narrow.parameters()) < 0.6 * sum(p.numel() for p in wide.parameters())
    assert narrow(torch.randn(2, 3, 112, 112)).shape == (2, 7)


def test_keeping_every_channel_gives_the_wide_nets_outputs():
    torch.manual_seed(0)
    wide, copy = DlibFaceResNet(7).eval(), DlibFaceResNet(7).eval()
    x = torch.randn(4, 3, 112, 112)
    kept = prune(wide, copy, inner_activity(wide, x)[0])
    assert kept[0] == list(range(32)) and torch.allclose(wide(x), copy(x), atol=1e-5)


def test_the_best_channels_are_kept_in_their_order():
    assert keep_channels(torch.tensor([0.1, 3.0, 0.2, 2.0]), 2).tolist() == [1, 3]


def test_a_dropped_channels_steady_output_moves_into_the_bias():
    """A channel whose activation is the same everywhere sends conv2 a constant: dropped, conv2's bias carries it,
    so the block's output away from the border (where conv2's zero padding cuts it short) does not change."""
    torch.manual_seed(1)
    wide, narrow = Block(8, 8, 1).eval(), Block(8, 8, 1, mid=7).eval()
    with torch.no_grad():
        wide.conv1.weight[3] = 0
        wide.conv1.bias[3] = 0.5
        wide.aff1.weight[3], wide.aff1.bias[3] = 2.0, 0.25  # the channel is 1.25 everywhere
    keep = torch.tensor([0, 1, 2, 4, 5, 6, 7])
    activity = torch.ones(8)
    activity[3] = 1.25
    narrow_block(wide, narrow, keep, activity)
    x = torch.randn(2, 8, 12, 12)
    assert torch.allclose(wide(x)[..., 1:-1, 1:-1], narrow(x)[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(wide(x), narrow(x), atol=1e-5)


def test_a_gray_plane_through_the_folded_stem_equals_three_normalised_planes():
    from training.models.dlib_resnet import DLIB_INPUT

    torch.manual_seed(2)
    net = DlibFaceResNet(7, inner=0.5).eval()
    mean, std = (torch.tensor(DLIB_INPUT[k]).view(3, 1, 1) for k in ("mean", "std"))
    plane = torch.rand(2, 1, 112, 112)
    with torch.inference_mode():
        assert torch.allclose(net.forward_plane(plane, mean, std), net((plane - mean) / std), atol=1e-4)


def test_a_half_width_net_is_filled_from_the_wide_one_block_by_block():
    """Down blocks (stride 2, more channels out than in) are narrowed too; each block keeps its best channels."""
    torch.manual_seed(4)
    wide, narrow = DlibFaceResNet(7).eval(), DlibFaceResNet(7, inner=0.5).eval()
    x = torch.randn(6, 3, 112, 112)
    kept = prune(wide, narrow, inner_activity(wide, x)[0])
    assert [len(k) for k in kept] == [b.conv1.out_channels for b in narrow.blocks]
    down = narrow.blocks[3]  # the first 64-channel block: 32 in, stride 2
    assert (down.conv1.in_channels, down.conv1.out_channels, down.conv2.out_channels) == (32, 32, 64)
    assert torch.equal(down.conv1.weight, wide.blocks[3].conv1.weight[kept[3]])
    assert torch.equal(narrow.head[1].weight, wide.head[1].weight) and narrow(x).shape == (6, 7)
