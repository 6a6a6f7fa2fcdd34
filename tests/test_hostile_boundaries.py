"""Boundaries said right (issue 28): the readable share is a fraction of frame counts, so a clip exactly half
readable is accepted with its warning and one frame less is refused by a message that states the rule; a ``start``
at or past the end of a clip is a 422 that says how long the clip is, on ``/predict/video`` and for a job alike.
No server path appears in a failed model's answer."""

from __future__ import annotations

import json

import cv2
import pytest

from benchmarks.synth import Appearance, write_clip
from service.errors import InvalidInput
from service.video import decode
from service.video.decode import FrameSampler, Sampling
from tests.conftest import upload
from tests.factories import broken_entry

SECONDS, FPS = 10.0, 25
FRAMES = int(SECONDS * FPS)


class Damaged:
    """A real capture whose grabs of frames ``[lo, hi)`` fail, as a damaged stretch of exactly those would."""

    def __init__(self, real, lo: int, hi: int) -> None:
        self.real, self.lo, self.hi, self.index = real, lo, hi, -1

    def grab(self) -> bool:
        if not self.real.grab():
            return False
        self.index += 1
        return not (self.lo <= self.index < self.hi)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, face_photo):
    folder = tmp_path_factory.mktemp("boundary")
    return write_clip(folder / "clip.mp4", [Appearance(face_photo, 0, SECONDS, (100, 60))], SECONDS, fps=FPS)


@pytest.fixture
def damage(monkeypatch):
    """``damage(n)``: from now on, every clip opened loses ``n`` frames in its middle."""
    real = cv2.VideoCapture

    def apply(unreadable: int) -> None:
        lo = (FRAMES - unreadable) // 2
        monkeypatch.setattr(decode.cv2, "VideoCapture", lambda *a: Damaged(real(*a), lo, lo + unreadable))

    return apply


def test_exactly_half_readable_is_accepted_and_one_frame_less_is_refused_by_the_rule(clip, damage):
    damage(FRAMES // 2)
    sampler = FrameSampler(str(clip), Sampling(5.0, min_readable_share=0.5))
    times = [t for t, _, _ in sampler]
    assert times and sampler.info.readable_frames() == (FRAMES // 2, FRAMES) and sampler.info.readable_share == 0.5

    damage(FRAMES // 2 + 1)
    with pytest.raises(InvalidInput) as refused:
        list(FrameSampler(str(clip), Sampling(5.0, min_readable_share=0.5)))
    detail = refused.value.detail
    assert detail.startswith("only 49% of the analysed video decodes (124 of its 250 frames; 126 unreadable"), detail
    assert "less than half decodes is refused" in detail and "at least" not in detail


def test_the_route_accepts_a_half_readable_clip_with_its_warning(client, clip, damage):
    damage(FRAMES // 2)
    response = client.post("/predict/video", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["frames_unreadable"] == FRAMES // 2 and any("other 50%" in w for w in body["warnings"]), body


@pytest.mark.parametrize("start", [SECONDS, 100.0])
def test_start_at_or_past_the_end_is_a_422_that_says_the_duration(client, make_client, clip, tmp_path, start):
    data = upload(clip.read_bytes(), clip.name, "video/mp4")
    response = client.post(f"/predict/video?start={start:g}", files=data)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        f"start={start:g} s is at or past the end of the clip, which lasts 10.00 s"
    )
    jobs = make_client(jobs_dir=tmp_path / "jobs")
    refused = jobs.post(f"/jobs/video?start={start:g}", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert refused.status_code == 422 and "which lasts 10.00 s" in refused.json()["detail"]
    assert jobs.get("/jobs").json()["total"] == 0 and not [
        p for p in (tmp_path / "jobs").iterdir() if not p.name.startswith(".")
    ]
    assert client.post("/predict/video?start=9.5", files=data).status_code == 200  # just before the end


def test_a_failed_models_answer_names_the_model_never_a_server_path(store_copy, make_client):
    """A graph that passes its checksum but that onnxruntime cannot parse: its own message holds the file's
    absolute path; answers, /models and readiness say ``name:version/file`` instead. (A plain, unrouted graph with
    8-bit int8 weights: the routed default, and any int8 graph narrowed on a CPU without VNNI, is parsed by the onnx
    package first, whose message names no file.)"""
    broken = broken_entry(store_copy)
    client = make_client(store_path=store_copy, int8_weights="8")
    response = client.post("/predict/face?model=broken", files=upload(b"\xff\xd8\xff"))
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert f"broken:{broken.name}" in detail and "Protobuf" in detail
    assert str(store_copy) not in detail and "/" + broken.name + "/" not in detail
    listed = client.get("/models/broken").json()
    assert listed["state"] == "failed" and str(store_copy) not in json.dumps(listed)
