"""A stream whose frames change size (a phone turned, a webcam's resolution switched): the old boxes mean nothing in
the new frame, so its tracks end and the frame gets a whole-frame pass, through ``FaceFollower`` with the real
RetinaFace detector. Before, the frame was searched only around the old boxes, and its face went unseen until the
next scheduled pass."""

from __future__ import annotations

import cv2
import pytest

from benchmarks.synth import background, paste
from model_store import InputSpec
from service.config import Settings
from service.detection import create_detector
from service.detection.align import FaceCropper
from service.options import resolve_options
from service.video.follow import FaceFollower

SPEC = InputSpec(height=48, width=48, channels=1, face_margin=0.1, edge="replicate")


@pytest.fixture(scope="module")
def face(photo_paths):
    detector = create_detector(Settings(_env_file=None).detector)
    for path in photo_paths:
        image = cv2.resize(cv2.imread(str(path)), (160, 160), interpolation=cv2.INTER_AREA)
        if len(detector.detect(image)) == 1:
            return detector, image
    pytest.fail("no photo with one face")


def test_a_frame_of_another_size_ends_the_tracks_and_is_scanned_whole(face):
    """The same picture at twice the resolution: its thumbnail is the old one (no shot change), but the face is at
    twice its old place, far outside the region searched around the old box."""
    detector, image = face
    follower = FaceFollower(detector, FaceCropper(), SPEC, resolve_options(Settings(_env_file=None)))
    small = background(640, 480, seed=3)
    paste(small, image, 440, 300)
    first = [follower.follow(small, i * 0.2) for i in range(3)]
    assert [[tf.track_id for tf in faces] for faces in first] == [[1], [1], [1]]
    large = cv2.resize(small, (1280, 960), interpolation=cv2.INTER_LINEAR)
    switched = follower.follow(large, 0.6)  # no whole-frame pass due for 2 samples
    assert [tf.track_id for tf in switched] == [2] and switched[0].detection.box[0] > 800  # found where it now is
    assert follower.follow(large, 0.8)[0].track_id == 2  # and followed from there
    assert follower.counts["shot_cuts"] == 0  # the picture did not change: not a shot change
