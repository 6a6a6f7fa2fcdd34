"""Large photos (a phone's 12 megapixels): the finer look for faces the first scan is too coarse to see, and the
cheap shrink every scan of one starts with."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.synth import background
from service.config import Settings
from service.detection import Detection
from service.detection.scaling import rescaled
from service.options import resolve_options
from service.pipelines.face import FacePipeline


def test_a_large_shrink_is_the_one_step_result_within_a_level_and_a_small_one_is_it_exactly():
    image = background(4032, 3024)
    shrunk = rescaled(image, 320 / 4032)
    one_step = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
    assert shrunk.shape == one_step.shape and np.abs(shrunk.astype(int) - one_step).mean() < 1.0
    half = rescaled(image[:720, :1280], 0.5)  # video frames to their scan size: untouched
    assert np.array_equal(half, cv2.resize(image[:720, :1280], (640, 360), interpolation=cv2.INTER_AREA))


class DeepOnly:
    """A stand-in detector that finds its face in the photo itself (not in a bordered copy) when asked to look for
    faces of at most 300 px."""

    def __init__(self) -> None:
        self.asked: list[int | None] = []

    def detect(self, image, min_face=None):
        self.asked.append(min_face)
        deep = min_face is not None and min_face <= 300 and image[0, 0, 0] != 128
        return [Detection(900, 700, 250, 250, 0.9)] if deep else []


def find(image: np.ndarray, **settings) -> tuple[list[Detection], list[int | None]]:
    detector = DeepOnly()
    opts = resolve_options(Settings(_env_file=None, **settings))
    return FacePipeline(detector, 10**8)._find(image, opts), detector.asked


def test_a_large_photo_with_no_face_found_gets_a_finer_look_down_to_a_tenth_of_its_side():
    faces, asked = find(np.zeros((2250, 3000, 3), np.uint8))
    assert faces == [Detection(900, 700, 250, 250, 0.9)] and asked == [None, 300]  # no close-up scan after it


@pytest.mark.parametrize(
    ("side", "settings", "asked"),
    [
        (1000, {}, [None, None]),  # under finer_look_from: the first scan, then the close-up
        (3000, {"detector": {"finer_look": 0}}, [None, None]),  # off
        (3000, {"detector": {"min_face_size": 600}}, [600, 205]),  # the request set how deep; 205 px in the copy
        (3000, {"detector": {"finer_look": 5}}, [None, 600, None]),  # 1/5: not deep enough for this face
    ],
)
def test_the_finer_look_only_for_large_photos_when_on_and_not_asked_for_a_face_size(side, settings, asked):
    faces, seen = find(np.zeros((side * 3 // 4, side, 3), np.uint8), **settings)
    assert faces == [] and seen == asked


def test_a_phone_photo_of_a_face_a_tenth_of_its_side_is_found(client, face_photo):
    """A face of about 400 px in 12 megapixels: the first scan (at 320 px, faces from about 800) misses it, and so
    did the close-up scan after it (no face found before the finer look)."""
    image = background(4032, 3024)
    image[1000:1450, 1500:1950] = cv2.resize(face_photo, (450, 450))
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    body = client.post("/predict/image", content=data, headers={"content-type": "image/jpeg"}).json()
    (face,) = body["faces"]
    box = face["box"]
    assert body["width"] == 4032 and box["x"] >= 1500 and box["x"] + box["width"] <= 1950 and box["width"] > 300


@pytest.mark.parametrize(("width", "height"), [(4000, 3), (3, 4000), (9000, 16), (2, 3000)])
def test_a_strip_keeps_a_row_through_the_block_step_and_is_answered(client, width, height):
    """The block step took its factor from the long side alone: a 4000 x 3 strip shrunk to no rows, a 500."""
    strip = cv2.resize(background(640, 480), (width, height), interpolation=cv2.INTER_AREA)
    assert min(rescaled(strip, 320 / max(width, height)).shape[:2]) >= 1
    data = cv2.imencode(".png", strip)[1].tobytes()
    response = client.post("/predict/image", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.json()["width"] == width
