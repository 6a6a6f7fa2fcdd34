"""A gray face is resized as one plane and repeated (``to_uint8_face``): the same bytes as resizing all three."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model_store import InputSpec, to_uint8_face
from model_store.preprocess import gray_plane

COLOUR150 = InputSpec(height=150, width=150, channels=3, mean=[0.5] * 3, std=[0.25] * 3)
GRAY48 = InputSpec(height=48, width=48, channels=1, mean=[0.5], std=[0.25])


def three_planes_resized(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """What the three-plane resize gives: every plane resized, then BGR -> RGB."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    interp = cv2.INTER_AREA if image.shape[0] > spec.height else cv2.INTER_LINEAR
    return cv2.resize(image, (spec.width, spec.height), interpolation=interp)[:, :, ::-1]


@pytest.fixture
def gray_face() -> np.ndarray:
    rng = np.random.default_rng(3)
    plane = cv2.GaussianBlur(rng.integers(0, 256, (233, 207), dtype=np.uint8), (5, 5), 0)
    return cv2.merge([plane] * 3)


@pytest.mark.parametrize("side", [97, 233, 400])
def test_a_gray_face_gives_the_bytes_of_three_planes_resized(gray_face, side):
    face = cv2.resize(gray_face, (side, side), interpolation=cv2.INTER_LINEAR)
    out = to_uint8_face(face, COLOUR150)
    assert out.shape == (150, 150, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, three_planes_resized(face, COLOUR150))


def test_a_one_plane_face_is_repeated_after_the_resize(gray_face):
    plane = np.ascontiguousarray(gray_face[:, :, 0])
    np.testing.assert_array_equal(to_uint8_face(plane, COLOUR150), three_planes_resized(plane, COLOUR150))
    np.testing.assert_array_equal(to_uint8_face(plane[:150, :150], COLOUR150), np.repeat(plane[:150, :150, None], 3, 2))


def test_a_face_with_one_coloured_pixel_keeps_its_colour(gray_face):
    face = gray_face.copy()
    face[5, 7, 2] = 255 - face[5, 7, 2] // 2  # off the middle row: only the whole comparison sees it
    assert gray_plane(face) is None
    out = to_uint8_face(face, COLOUR150)
    np.testing.assert_array_equal(out, three_planes_resized(face, COLOUR150))
    assert not np.array_equal(out[..., 0], out[..., 2])


def test_gray_plane_reads_views_and_rejects_colour(gray_face):
    view = gray_face[10:200, 20:180]  # a crop is a view into the picture, not contiguous
    np.testing.assert_array_equal(gray_plane(view), view[:, :, 0])
    colour = gray_face.copy()
    colour[..., 1] = 255 - colour[..., 1]
    assert gray_plane(colour) is None


def test_a_gray_model_reads_the_same_plane(gray_face):
    expected = cv2.resize(gray_face[:, :, 0], (48, 48), interpolation=cv2.INTER_AREA)[:, :, None]
    np.testing.assert_array_equal(to_uint8_face(gray_face, GRAY48), expected)
