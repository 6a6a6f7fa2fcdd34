"""Whole-frame passes put off over a still picture, through ``FaceFollower`` with the real RetinaFace detector on
real photos over a textured backdrop (sensor noise added to every frame): what is put off, and that every face is
still found on the sample it would be found on with every pass run."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from benchmarks.synth import background, paste
from model_store import InputSpec
from service.config import Settings
from service.detection import create_detector
from service.detection.align import FaceCropper
from service.options import resolve_options
from service.video.follow import FaceFollower

SPEC = InputSpec(height=48, width=48, channels=1, face_margin=0.1, edge="replicate")
SIZE = (640, 480)
EVERY = 5  # a scheduled pass every 5 samples, as video at 5 samples a second


@pytest.fixture(scope="module")
def detector():
    return create_detector(Settings(_env_file=None).detector)


@pytest.fixture(scope="module")
def two_faces(photo_paths, detector) -> list[np.ndarray]:
    """Two 160-px photos in each of which RetinaFace finds one face."""
    found = []
    for path in photo_paths:
        image = cv2.resize(cv2.imread(str(path)), (160, 160), interpolation=cv2.INTER_AREA)
        if len(detector.detect(image)) == 1:
            found.append(image)
        if len(found) == 2:
            return found
    pytest.fail("fewer than two photos with one face")


def scene(faces: list[tuple[np.ndarray, tuple[int, int]]], shift: int = 0, seed: int = 0) -> np.ndarray:
    """The backdrop (slid left by ``shift`` px: a pan) with ``faces`` pasted at their places, plus sensor noise."""
    wide = background(SIZE[0] + 200, SIZE[1], seed=5)
    frame = np.ascontiguousarray(wide[:, shift : shift + SIZE[0]])
    for image, (x, y) in faces:
        paste(frame, image, x, y)
    noise = np.random.default_rng(seed).normal(0.0, 2.0, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def follow(detector, frames: list[np.ndarray], quiet_passes: int) -> tuple[FaceFollower, list[list]]:
    opts = replace(resolve_options(Settings(_env_file=None)), full_detect_every=EVERY, quiet_passes=quiet_passes)
    follower = FaceFollower(detector, FaceCropper(), SPEC, opts)
    return follower, [follower.follow(frame, i * 0.2) for i, frame in enumerate(frames)]


def found(samples: list[list]) -> list[int]:
    return [len(faces) for faces in samples]


def test_a_still_face_on_a_still_backdrop_is_scanned_whole_once_every_three_intervals(detector, two_faces):
    frames = [scene([(two_faces[0], (240, 160))], seed=i) for i in range(20)]
    quiet, samples = follow(detector, frames, quiet_passes=3)
    every, reference = follow(detector, frames, quiet_passes=0)
    assert quiet.counts["full_frame_passes"] == 2 and quiet.counts["full_frame_passes_put_off"] == 2  # 0, 15; 5, 10
    assert every.counts["full_frame_passes"] == 4 and every.counts["full_frame_passes_put_off"] == 0
    assert found(samples) == found(reference) == [1] * 20
    assert len({face.track_id for faces in samples for face in faces}) == 1


def test_an_empty_still_picture_is_not_scanned_every_sample_and_a_face_arriving_is_found_at_once(detector, two_faces):
    frames = [scene([], seed=i) for i in range(8)] + [scene([(two_faces[0], (240, 160))], seed=i) for i in range(4)]
    quiet, samples = follow(detector, frames, quiet_passes=3)
    every, reference = follow(detector, frames, quiet_passes=0)
    assert every.counts["full_frame_passes"] == 10  # nothing tracked: every sample until the face is found; 10
    assert quiet.counts["full_frame_passes"] == 2 and quiet.counts["full_frame_passes_put_off"] == 8  # 0, 8; 1-7, 10
    assert found(samples) == found(reference) == [0] * 8 + [1] * 4


def test_a_face_arriving_beside_a_tracked_one_is_found_on_the_next_scheduled_pass(detector, two_faces):
    first, second = (two_faces[0], (60, 160)), (two_faces[1], (420, 160))
    frames = [scene([first] + ([second] if i >= 7 else []), seed=i) for i in range(14)]
    quiet, samples = follow(detector, frames, quiet_passes=3)
    _, reference = follow(detector, frames, quiet_passes=0)
    assert found(samples) == found(reference) == [1] * 10 + [2] * 4  # the pass at sample 10 finds it, both ways
    assert quiet.counts["full_frame_passes_put_off"] == 1  # sample 5: the picture was still


def test_a_pan_puts_nothing_off(detector, two_faces):
    frames = [scene([(two_faces[0], (240, 160))], shift=12 * i, seed=i) for i in range(12)]
    quiet, samples = follow(detector, frames, quiet_passes=3)
    assert quiet.counts["full_frame_passes"] == 3 and quiet.counts["full_frame_passes_put_off"] == 0
    assert found(samples) == [1] * 12
