"""The in-graph input adapter: the same resampling and channel steps as the one preprocessing, as linear maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from model_store import InputSpec, normalize, to_uint8_face
from training.models.adapt import InputAdapter, resize_matrix


@pytest.mark.parametrize(("src", "dst"), [(112, 48), (144, 48), (150, 112), (48, 112), (100, 112), (48, 48)])
def test_resize_matrix_resamples_as_opencv(src, dst):
    image = np.random.default_rng(src + dst).uniform(0, 255, (src, src)).astype(np.float32)
    interpolation = cv2.INTER_AREA if dst < src else cv2.INTER_LINEAR
    expected = cv2.resize(image, (dst, dst), interpolation=interpolation)
    m = resize_matrix(src, dst).double().numpy()
    assert np.abs(m @ image @ m.T - expected).max() < 1e-3
    assert np.allclose(m.sum(axis=1), 1.0)  # every output pixel is a weighted mean


def test_resize_matrix_refuses_empty_lines():
    with pytest.raises(ValueError, match="cannot resample"):
        resize_matrix(0, 4)


COLOUR = {"height": 112, "width": 112, "channels": 3, "mean": [0.48, 0.46, 0.41], "std": [1.0, 1.0, 1.0]}
GRAY = {"height": 48, "width": 48, "channels": 1, "mean": [0.5], "std": [0.25]}


def test_a_colour_input_becomes_the_gray_members_own():
    crop = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    source = InputSpec(**COLOUR)
    x = torch.from_numpy(normalize(to_uint8_face(crop, source)[None], source))
    got = InputAdapter(COLOUR, GRAY)(x).numpy()
    target = InputSpec(**GRAY)
    expected = normalize(to_uint8_face(crop, target)[None], target)  # BGR crop -> gray -> 48 px, rounded to uint8
    assert got.shape == (1, 1, 48, 48) and np.abs(got - expected).max() < 4 * (1 / 255) / 0.25


def test_the_same_input_passes_through():
    x = torch.randn(2, 1, 48, 48)
    assert torch.equal(InputAdapter(GRAY, GRAY)(x), x)


def test_gray_to_colour_repeats_the_channel():
    x = torch.rand(1, 1, 48, 48)
    out = InputAdapter(GRAY, {**GRAY, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3})(x)
    assert out.shape == (1, 3, 48, 48) and torch.allclose(out[:, 0], out[:, 2])


def test_a_gray_plane_resamples_one_plane_and_repeats_it():
    """A colour model given only gray faces: the same input as the three-plane resampling for a gray face, one plane
    of work; a colour face is read as its gray (the model's route never sends it one)."""
    rng = np.random.default_rng(1)
    source = {**COLOUR, "height": 150, "width": 150}
    gray = np.repeat(rng.uniform(0, 1, (1, 1, 150, 150)), 3, axis=1).astype(np.float32)
    x = (torch.from_numpy(gray) - torch.tensor(source["mean"]).view(1, 3, 1, 1)) / 1.0
    planes, plane = InputAdapter(source, COLOUR)(x), InputAdapter(source, COLOUR, gray_plane=True)(x)
    assert plane.shape == (1, 3, 112, 112) and torch.allclose(plane, planes, atol=1e-5)
    colour = x + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)
    out = InputAdapter(source, COLOUR, gray_plane=True)(colour)
    assert torch.allclose(out[:, 0] + source["mean"][0], out[:, 1] + source["mean"][1], atol=1e-5)


def test_a_gray_plane_needs_colour_on_both_sides():
    with pytest.raises(ValueError, match="gray_plane"):
        InputAdapter(COLOUR, GRAY, gray_plane=True)
