"""The quality fields and the reliable rule (``service.quality``): pure arithmetic, no models or files."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from service.config import QualitySettings, Settings
from service.detection import Detection, close_up_faces
from service.quality import assess, certainty, is_reliable, picture_quality, pose, sharpness

# The 5-point ArcFace template (112 px): a frontal face's left eye, right eye, nose, mouth corners.
FRONTAL = [(38.3, 51.7), (73.5, 51.5), (56.0, 71.7), (41.5, 92.4), (70.7, 92.2)]


def textured_face(side: int = 128, seed: int = 0) -> np.ndarray:
    """A sharp, face-sized patch: blocks and edges, as a face's eyes, brows and mouth give."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (side // 8, side // 8), dtype=np.uint8)
    return cv2.cvtColor(cv2.resize(small, (side, side), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)


def test_sharpness_falls_with_blur_and_does_not_grow_with_size():
    face = textured_face()
    blurred = cv2.GaussianBlur(face, (0, 0), 4)
    assert sharpness(face) > 10 * sharpness(blurred)
    # the same face at twice the size scores about the same: sharpness is measured at a fixed side
    large = cv2.resize(face, (256, 256), interpolation=cv2.INTER_NEAREST)
    assert sharpness(large) == pytest.approx(sharpness(face), rel=0.1)
    # a small face enlarged to the same side is blurrier than the face itself
    tiny = cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA)
    assert sharpness(tiny) < sharpness(face) / 3
    assert sharpness(np.zeros((0, 0, 3), np.uint8)) == 0.0


def test_frontal_landmarks_score_near_one_and_turned_ones_low():
    frontal = pose(FRONTAL)
    assert frontal.frontal > 0.9 and abs(frontal.yaw) < 0.05 and abs(frontal.pitch) < 0.05
    # the head turned: the nose moves towards one eye
    turned = [*FRONTAL[:2], (70.0, 71.7), *FRONTAL[3:]]
    assert pose(turned).yaw > 0.7 and pose(turned).frontal < 0.3
    assert pose([*FRONTAL[:2], (42.0, 71.7), *FRONTAL[3:]]).yaw < -0.7
    # tilted: the nose close to the eye line
    tilted = [*FRONTAL[:2], (56.0, 55.0), *FRONTAL[3:]]
    assert pose(tilted).pitch < -0.6 and pose(tilted).frontal < 0.4


def test_pose_ignores_roll_and_scale():
    """A frontal face rotated in the image plane and enlarged stays frontal."""
    angle = math.radians(30)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (np.array(FRONTAL) @ rot.T) * 3 + 500
    assert pose(moved.tolist()).frontal == pytest.approx(pose(FRONTAL).frontal, abs=1e-3)


def test_margin_and_entropy():
    margin, entropy = certainty([0.7, 0.2, 0.1])
    assert margin == pytest.approx(0.5) and 0 < entropy < 1
    assert certainty([1.0, 0.0, 0.0]) == pytest.approx((1.0, 0.0))
    uniform = certainty([0.25] * 4)
    assert uniform[0] == pytest.approx(0.0) and uniform[1] == pytest.approx(1.0)


def rule(**overrides) -> QualitySettings:
    values = {"min_face_px": 40, "min_sharpness": 40.0, "min_frontal": 0.3, "min_margin": 0.2}
    return QualitySettings(**{**values, **overrides})


def test_the_rule_needs_every_field_to_pass():
    face = textured_face()
    good = picture_quality(face, (0, 0, 128, 128), FRONTAL, 0.99)
    assert is_reliable(good, 0.5, rule())
    assert not is_reliable(good, 0.1, rule())  # an unclear answer
    small = picture_quality(face, (0, 0, 30, 30), FRONTAL, 0.99)
    assert small.face_px == 30 and not is_reliable(small, 0.9, rule())
    blurred = picture_quality(cv2.GaussianBlur(face, (0, 0), 6), (0, 0, 128, 128), FRONTAL, 0.99)
    assert not is_reliable(blurred, 0.9, rule())
    turned = picture_quality(face, (0, 0, 128, 128), [*FRONTAL[:2], (72.0, 71.7), *FRONTAL[3:]], 0.99)
    assert not is_reliable(turned, 0.9, rule())
    # no landmarks (a face crop): the pose is unknown and passes; turning a threshold off lets the face through
    crop = picture_quality(face, (0, 0, 128, 128))
    assert crop.pose is None and crop.detector_score is None and is_reliable(crop, 0.5, rule())
    assert is_reliable(turned, 0.9, rule(min_frontal=0.0))


def test_assess_uses_the_margin_of_the_probabilities():
    picture = picture_quality(textured_face(), (0, 0, 128, 128), FRONTAL, 0.99)
    sure, unsure = assess(picture, [0.9, 0.05, 0.05], rule()), assess(picture, [0.4, 0.35, 0.25], rule())
    assert sure.reliable and sure.margin == pytest.approx(0.85)
    assert not unsure.reliable and unsure.margin == pytest.approx(0.05) and unsure.entropy > sure.entropy


def test_the_service_defaults_are_the_measured_ones():
    """The settings group holds the thresholds the reliability report states (benchmarks/reliability.py)."""
    import json
    from pathlib import Path

    report = Path(__file__).resolve().parents[1] / "model_store/emotion_transfer/1.1.0/reports/reliability"
    measured = json.loads((report / "reliability.json").read_text())["thresholds"]
    assert Settings(_env_file=None).quality.model_dump() == measured


def test_landmarks_follow_their_box():
    """Boxes moved into the full image (regions, the padded second scan) move their landmarks too."""
    found = Detection(10, 20, 50, 50, 0.9, ((20.0, 30.0), (40.0, 30.0), (30.0, 40.0), (22.0, 50.0), (38.0, 50.0)))
    moved = found.moved(100, 200, 2.0)
    assert moved.landmarks[0] == (110.0, 215.0) and moved.box == (105, 210, 25, 25)

    class Padded:  # a detector that finds one face in the padded canvas
        def detect(self, image, min_face=None):
            return [Detection(30, 30, 60, 60, 0.9, ((40.0, 50.0),) * 5)]

    found = close_up_faces(Padded(), np.zeros((100, 100, 3), np.uint8), 0.2)
    assert found[0].box == (10, 10, 60, 60) and found[0].landmarks[0] == (20.0, 30.0)
