"""``quality`` and ``reliable`` on every face the service answers: photos, face crops and video timelines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.synth import Appearance, write_clip
from tests.conftest import jpeg, upload

FIELDS = {"face_px", "sharpness", "yaw", "pitch", "frontal", "detector_score", "margin", "entropy"}


def test_a_photo_face_has_every_quality_field(client, face_photo):
    r = client.post("/predict/image", files=upload(jpeg(face_photo)))
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert set(face["quality"]) == FIELDS and isinstance(face["reliable"], bool)
    q = face["quality"]
    assert q["face_px"] == min(face["box"]["width"], face["box"]["height"])
    assert q["detector_score"] == pytest.approx(face["score"], abs=1e-3) and q["detector_score"] > 0.5
    assert 0 <= q["frontal"] <= 1 and -1 <= q["yaw"] <= 1 and -1 <= q["pitch"] <= 1  # RetinaFace's landmarks
    top = sorted(face["emotions"].values(), reverse=True)
    assert q["margin"] == pytest.approx(top[0] - top[1], abs=2e-3) and 0 <= q["entropy"] <= 1
    assert q["sharpness"] > 40  # a sharp news photo


def test_a_blurred_tiny_face_is_unreliable(client, face_photo):
    tiny = cv2.GaussianBlur(cv2.resize(face_photo, (28, 28), interpolation=cv2.INTER_AREA), (0, 0), 1.5)
    r = client.post("/predict/image", files=upload(jpeg(tiny)))
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert faces, "a small photo with no face found is taken whole"
    assert faces[0]["quality"]["face_px"] < 32 and faces[0]["reliable"] is False
    sharp = client.post("/predict/image", files=upload(jpeg(face_photo))).json()["faces"][0]["quality"]
    assert faces[0]["quality"]["sharpness"] < sharp["sharpness"] / 4


def test_a_face_crop_has_no_pose(client, face_photo):
    r = client.post("/predict/face", files=upload(jpeg(face_photo)))
    assert r.status_code == 200, r.text
    body = r.json()
    q = body["quality"]
    assert set(q) == FIELDS and q["yaw"] is None and q["pitch"] is None and q["frontal"] is None
    assert q["detector_score"] is None and q["face_px"] == min(face_photo.shape[:2])
    assert isinstance(body["reliable"], bool)


def test_video_samples_and_tracks_carry_quality(client, face_photo, tmp_path):
    face = cv2.resize(face_photo, (200, 200))
    path = write_clip(tmp_path / "one.mp4", [Appearance(face, 0.0, 1.0, (200, 120))], duration=1.0, fps=10)
    with open(path, "rb") as fh:
        r = client.post("/predict/video", files={"file": ("one.mp4", fh, "video/mp4")}, data={"sample_fps": "5"})
    assert r.status_code == 200, r.text
    track = r.json()["tracks"][0]
    points = track["timeline"]
    assert all(set(p["quality"]) == FIELDS and isinstance(p["reliable"], bool) for p in points)
    assert track["reliable_share"] == pytest.approx(np.mean([p["reliable"] for p in points]), abs=1e-3)
