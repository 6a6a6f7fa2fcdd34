"""The picture inside flat bars (``service.detection.bars``): pure array logic, no model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service.detection.bars import Picture, picture_box
from service.detection.base import Detection


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def on_plain(picture: np.ndarray, width: int, height: int, x: int, y: int, colour=(127, 127, 127)) -> np.ndarray:
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = colour
    canvas[y : y + picture.shape[0], x : x + picture.shape[1]] = picture
    return canvas


def test_a_photo_on_a_plain_canvas_is_found_exactly() -> None:
    canvas = on_plain(textured(360, 300), 640, 480, 170, 60)
    assert picture_box(canvas) == (170, 60, 300, 360)


def test_letterbox_and_pillarbox_bars_of_any_colour() -> None:
    assert picture_box(on_plain(textured(400, 1280), 1280, 720, 0, 160, (0, 0, 0))) == (0, 160, 1280, 400)
    assert picture_box(on_plain(textured(480, 500), 640, 480, 70, 0, (30, 200, 90))) == (70, 0, 500, 480)


def test_an_image_without_bars_is_its_own_picture() -> None:
    assert picture_box(textured(250, 250)) == (0, 0, 250, 250)


def test_a_gray_image_and_a_flat_image() -> None:
    gray = cv2.cvtColor(on_plain(textured(200, 200), 400, 300, 100, 50), cv2.COLOR_BGR2GRAY)
    assert picture_box(gray) == (100, 50, 200, 200)
    assert picture_box(np.zeros((100, 120, 3), np.uint8)) == (0, 0, 120, 100)  # no picture in bars: all of it


def test_thin_lines_and_lines_of_another_colour_are_picture() -> None:
    framed = on_plain(textured(300, 300), 306, 306, 3, 3, (255, 255, 255))  # a 3-px frame line
    assert picture_box(framed) == (0, 0, 306, 306)
    two_tone = on_plain(textured(300, 300), 400, 300, 50, 0, (0, 0, 0))
    two_tone[:, 20:50] = 90  # the bar changes colour before the picture: only its first, edge-coloured part is bar
    assert picture_box(two_tone)[0] == 20


def test_a_flat_background_at_one_side_only_is_picture() -> None:
    """A wall beside a face reaches one edge from top to bottom; bars come in pairs."""
    walled = on_plain(textured(300, 260), 300, 300, 40, 0, (131, 131, 131))  # a 40-px wall at the left only
    assert picture_box(walled) == (0, 0, 300, 300)
    pillarboxed = on_plain(textured(300, 260), 340, 300, 40, 0, (131, 131, 131))
    assert picture_box(pillarboxed) == (40, 0, 260, 300)


def test_compression_noise_in_a_bar_is_within_the_tolerance() -> None:
    canvas = on_plain(textured(360, 360), 640, 480, 140, 60)
    noisy = canvas.astype(np.int16)
    noisy[50:60] += np.random.default_rng(1).integers(-4, 5, noisy[50:60].shape, dtype=np.int16)  # ringing rows
    assert picture_box(noisy.clip(0, 255).astype(np.uint8)) == (140, 60, 360, 360)


@pytest.mark.parametrize("find_bars", [True, False])
def test_a_picture_maps_boxes_and_landmarks_back_to_the_image(find_bars: bool) -> None:
    canvas = on_plain(textured(100, 80), 200, 160, 60, 30)
    picture = Picture.of(canvas, find_bars)
    dx, dy = (60, 30) if find_bars else (0, 0)
    assert picture.view.shape[:2] == ((100, 80) if find_bars else (160, 200))
    found = Detection(10, 20, 30, 40, 0.9, ((15.0, 25.0),) * 5)
    back = picture.to_image(found)
    assert back.box == (10 + dx, 20 + dy, 30, 40) and back.landmarks[0] == (15.0 + dx, 25.0 + dy)
    assert picture.to_view(back.box) == found.box
    assert np.shares_memory(picture.view, canvas)  # a view, not a copy
