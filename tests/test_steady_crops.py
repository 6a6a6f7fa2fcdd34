"""Steady classification crops (issue 30): ``FaceFollower`` cuts a tracked face from its track's smoothed box while
the face still reports the detector's box; the setting that turns it off; the square crop at the image's edge; faces
found and cut inside flat bars.

Unit level: a stub detector that returns scripted boxes on a plain frame (no models, no files)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import numpy as np
import pytest

from benchmarks.synth import Appearance, write_clip
from model_store import InputSpec, crop_face, to_uint8_face
from service.config import Settings
from service.detection import Detection
from service.options import Options, resolve_options
from service.video.follow import FaceFollower
from tests.live import serve

SPEC = InputSpec(height=48, width=48, channels=1, face_margin=0.1, edge="replicate")
STEP = 0.2  # 5 samples a second


class ScriptedDetector:
    """Returns the next scripted list of boxes on every call (whole-frame passes only: ``every=1``)."""

    name = "scripted"

    def __init__(self, frames: list[list[tuple[int, int, int, int]]]) -> None:
        self.frames = iter(frames)

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        return [Detection(*box, 0.9) for box in next(self.frames)]

    def smallest_face(self, scale: float = 1.0) -> float:
        return 20.0 / scale


class BoxCropper:
    """The ``box`` framing of ``FaceCropper`` without landmarks."""

    def crop(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray:
        return crop_face(image, box, spec)


def frame() -> np.ndarray:
    """A still, textured frame (so that two different crops of it differ)."""
    return np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)


def jittered(n: int, box=(180, 100, 120, 140), most: float = 0.03, seed: int = 1) -> list[tuple[int, int, int, int]]:
    """``n`` boxes of one still face moved and resized by up to ``most`` of its size (inside the deadband)."""
    rng, (x, y, w, h) = np.random.default_rng(seed), box
    out = []
    for dx, dy, dw, dh in rng.uniform(-most, most, (n, 4)):
        nw, nh = round(w * np.exp(dw)), round(h * np.exp(dh))
        cx, cy = x + w / 2 + dx * w, y + h / 2 + dy * h
        out.append((round(cx - nw / 2), round(cy - nh / 2), nw, nh))
    return out


def follow_all(scripted: list[list[tuple]], steady: bool = True) -> tuple[FaceFollower, list[list]]:
    # every sample a whole-frame pass, the scripted boxes: none put off over the still frame
    opts = Options(
        max_faces=10, min_face_size=None, whole_image_fallback_max_side=0, steady_boxes=steady, quiet_passes=0
    )
    follower = FaceFollower(ScriptedDetector(scripted), BoxCropper(), SPEC, opts)
    image = frame()
    return follower, [follower.follow(image, i * STEP, every=1) for i in range(len(scripted))]


def test_a_still_face_keeps_one_crop_box_while_its_reported_box_jitters():
    boxes = jittered(15)
    _, samples = follow_all([[b] for b in boxes])
    faces = [s[0] for s in samples]
    assert len({f.track_id for f in faces}) == 1
    assert [f.detection.box for f in faces] == boxes and len(set(boxes)) == len(boxes)  # reported: the detector's
    assert {f.crop_box for f in faces} == {boxes[0]}  # cut: the track's first box, every sample
    assert all(np.array_equal(f.face, faces[0].face) for f in faces)  # so the model sees the very same pixels


def test_without_steady_boxes_each_sample_is_cut_from_its_own_box():
    boxes = jittered(6)
    _, samples = follow_all([[b] for b in boxes], steady=False)
    assert [s[0].crop_box for s in samples] == boxes
    assert not np.array_equal(samples[0][0].face, samples[1][0].face)


def test_a_face_that_moves_is_followed_and_a_jump_is_taken_at_once():
    start = (100, 100, 100, 100)
    drift = [(100 + 10 * i, 100, 100, 100) for i in range(1, 8)]  # 10% of its size a sample: beyond the deadband
    jump = (drift[-1][0] + 40, 100, 100, 100)  # 0.4 of its size at once: beyond ``snap``, the same track (IoU 0.43)
    _, samples = follow_all([[start], *[[b] for b in drift], [jump]])
    crop_x = [s[0].crop_box[0] for s in samples]
    assert len({s[0].track_id for s in samples}) == 1
    assert crop_x == sorted(crop_x) and crop_x[-2] >= drift[-1][0] - 10  # caught up to within the deadband
    assert samples[-1][0].crop_box == jump


def test_ended_tracks_are_forgotten():
    a, b = (40, 40, 80, 80), (300, 200, 80, 80)
    scripted = [[a, b], [a, b], *[[a]] * 9]  # b unseen for 1.8 s > the tracker's 1.5 s gap: it ends
    follower, samples = follow_all(scripted)
    ids = {f.track_id for f in samples[0]}
    assert len(ids) == 2 and set(follower.smoother.states) == {samples[-1][0].track_id}


def test_two_faces_are_smoothed_apart():
    a, b = jittered(8, (40, 40, 80, 80), seed=2), jittered(8, (300, 200, 90, 90), seed=3)
    _, samples = follow_all([[x, y] for x, y in zip(a, b, strict=True)])
    by_track: dict[int, set] = {}
    for sample in samples:
        for f in sample:
            by_track.setdefault(f.track_id, set()).add(f.crop_box)
    assert sorted(by_track.values(), key=lambda s: min(s)) == [{a[0]}, {b[0]}]


@pytest.mark.parametrize(("env", "expected"), [(None, True), ("false", False), ("true", True)])
def test_the_setting_reaches_the_options(monkeypatch, env, expected):
    if env is not None:
        monkeypatch.setenv("EMOTION_VIDEO__STEADY_BOXES", env)
    assert resolve_options(Settings(_env_file=None)).steady_boxes is expected
    assert resolve_options(Settings(_env_file=None), capped=False).steady_boxes is expected  # the scorer's


def test_a_face_at_the_edge_is_cut_square_with_the_border_repeated():
    image = np.arange(100 * 80, dtype=np.uint8).reshape(100, 80) % 251
    crop = crop_face(image, (-10, 60, 40, 50), SPEC)  # the square (side 60) sticks out left and below
    assert crop.shape == (60, 60)
    inside = crop_face(image, (20, 20, 40, 40), SPEC)
    assert np.array_equal(inside, image[16:64, 16:64])  # inside the image: the plain slice, as before
    assert np.array_equal(crop[:, 0], crop[:, 1]) and np.array_equal(crop[-1], crop[-2])  # repeated border
    clipped = crop_face(image, (-10, 60, 40, 50), SPEC.model_copy(update={"edge": "clip"}))
    assert clipped.shape == (45, 40)  # the manifest's default: the square cut off at the edge


# --- end to end: a still clip through a live service, steady boxes on (the default) and off ------------------------


def still_clip_answer(path, **settings: str) -> dict:
    """``POST /predict/video`` of the clip at 5 samples a second, the EMA off, from a live ``python -m service``."""
    with serve(**settings) as url:
        files = {"file": ("still.mp4", path.read_bytes(), "video/mp4")}
        answer = httpx.post(url + "/predict/video?sample_fps=5&smoothing=0", files=files, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.json()


def spread_of(track: dict) -> float:
    """The largest standard deviation over samples of one label's probability."""
    rows = np.array([[p["emotions"][k] for k in sorted(p["emotions"])] for p in track["timeline"]])
    return float(rows.std(axis=0).max())


@pytest.mark.slow
def test_a_still_face_in_a_clip_keeps_its_label_and_its_scores_steady(face_photo, tmp_path):
    clip = write_clip(tmp_path / "still.mp4", [Appearance(face_photo, 0, 3.0, (150, 80))], 3.0)
    steady, raw = still_clip_answer(clip), still_clip_answer(clip, VIDEO__STEADY_BOXES="false")
    (track,), (raw_track,) = steady["tracks"], raw["tracks"]
    assert len(track["timeline"]) == 15 and len(track["segments"]) == 1  # one label throughout
    assert [p["box"] for p in track["timeline"]] == [p["box"] for p in raw_track["timeline"]]  # the detector's boxes
    assert len({tuple(p["box"].values()) for p in track["timeline"]}) > 1  # which move from sample to sample
    assert spread_of(track) < spread_of(raw_track) / 2  # one crop: only the mp4's own noise moves the scores


class CornerDetector:
    """Finds one face at the top-left corner of whatever image it is given, and notes each image's size."""

    name = "corner"

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        self.seen.append(image.shape[:2])
        return [Detection(0, 0, 60, 60, 0.9)]

    def smallest_face(self, scale: float = 1.0) -> float:
        return 20.0 / scale


@pytest.mark.parametrize("find_bars", [True, False])
def test_a_letterboxed_frames_faces_are_found_and_cut_inside_its_bars(find_bars: bool):
    """``opts.find_bars``: the detector sees the picture inside the bars, the box comes back in the frame's pixels,
    and a face at the picture's edge is cut as from the picture alone (its border repeated, not the bar's colour)."""
    picture = np.random.default_rng(2).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    letterboxed = np.zeros((360, 480, 3), np.uint8)
    letterboxed[80:280, 90:390] = picture
    opts = Options(max_faces=10, min_face_size=None, whole_image_fallback_max_side=0, steady_boxes=False)
    detector = CornerDetector()
    follower = FaceFollower(detector, BoxCropper(), SPEC, replace(opts, find_bars=find_bars))
    (face,) = follower.follow(letterboxed, 0.0, every=1)
    alone = to_uint8_face(crop_face(picture, (0, 0, 60, 60), SPEC), SPEC)
    if find_bars:
        assert detector.seen == [(200, 300)] and face.detection.box == (90, 80, 60, 60)
        assert np.array_equal(face.face, alone)
    else:
        assert detector.seen == [(360, 480)] and face.detection.box == (0, 0, 60, 60)
