"""Photo-like augmentations and mixup/CutMix: pure tensor logic, no model or files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.augment import AugmentCfg, augment_batch, mix_batch, reframe
from training.engine import view_disagreement

OFF = {"hflip": 0, "rotate_deg": 0, "shift": 0, "scale": 0, "brightness": 0, "contrast": 0, "erase_prob": 0}


def faces(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8))


def only(**on) -> AugmentCfg:
    return AugmentCfg(**OFF, **on)


def roughness(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontal neighbours, per image: noise is rough, blur smooths it."""
    return (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1)


def test_everything_off_returns_the_input():
    x = faces()
    out = augment_batch(x, only(), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.float(), atol=1e-3)


def test_blur_smooths_every_picked_face():
    x = faces()
    out = augment_batch(x, only(blur_prob=1.0, blur_sigma=1.5), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert (roughness(out) < 0.9 * roughness(x.float())).all()


def test_low_light_darkens_and_keeps_the_range():
    x = faces()
    out = augment_batch(x, only(dark_prob=1.0, dark_gamma=2.5), torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 255
    assert out.mean() < 0.85 * x.float().mean()


@pytest.mark.parametrize("prob", [0.0, 0.5, 1.0])
def test_jpeg_round_trip_changes_the_share_asked_and_stays_close(prob):
    x = faces(64)
    out = augment_batch(x, only(jpeg_prob=prob, jpeg_quality=(15, 30)), torch.Generator().manual_seed(1))
    changed = (out - x.float()).abs().flatten(1).amax(1) > 1
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert abs(changed.float().mean().item() - prob) <= 0.2
    if prob:
        assert (out - x.float())[changed].abs().mean() < 80  # artefacts, not another image


def rows_of(values: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images filled with their row's own value, and one-hot targets: a pixel shows whose it is."""
    x = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 12, 12).clone()
    return x, torch.eye(len(values))


def test_mixup_blends_images_and_targets_by_the_same_share():
    x, y = rows_of([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    out, soft = mix_batch(x, y, mixup=0.4, cutmix=0.0, gen=torch.Generator().manual_seed(3))
    assert torch.allclose(soft.sum(1), torch.ones(6))
    expected = soft @ torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    assert torch.allclose(out[:, 0, 0, 0], expected, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_target_share_is_the_pasted_area(seed):
    values = [float(v) for v in range(8)]
    x, y = rows_of(values)
    out, soft = mix_batch(x, y, mixup=0.0, cutmix=1.0, gen=torch.Generator().manual_seed(seed))
    for i in range(8):
        shares = torch.tensor([(out[i] == v).float().mean().item() for v in values])
        assert torch.allclose(soft[i], shares, atol=1e-6)


def test_mixing_off_leaves_the_batch_alone():
    x, y = rows_of([1.0, 2.0])
    out, soft = mix_batch(x, y, mixup=0.0, cutmix=0.0, gen=torch.Generator().manual_seed(0))
    assert out is x and soft is y


def test_reframe_moves_the_crop_by_about_the_asked_amount():
    """A bright square's centre moves by the drawn shift: no shift and no scale give the input back; a 0.05 sd shift
    moves it about 0.05 crop widths, edges replicated (no black border creeps in)."""
    x = torch.full((64, 48, 48, 1), 10.0)
    x[:, 20:28, 20:28] = 250.0
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(reframe(x, 0.0, 0.0, gen), x, atol=1e-3)
    moved = reframe(x, 0.05, 0.0, gen)
    mass = (moved[..., 0] > 130).float()
    cols = (mass.sum(1) * torch.arange(48)).sum(1) / mass.sum((1, 2))
    shift = (cols - 23.5) / 48
    assert 0.03 < shift.abs().mean() < 0.07 and moved.min() >= 9.9


def test_view_disagreement_is_zero_for_equal_views_and_grows_with_the_gap():
    a = torch.randn(8, 7)
    same = view_disagreement(torch.cat([a, a]))
    near = view_disagreement(torch.cat([a, a + 0.1 * torch.randn(8, 7)]))
    far = view_disagreement(torch.cat([a, torch.randn(8, 7) * 3]))
    assert same.abs() < 1e-6 and 0 < near < far
