"""A track is one person: clips cut hard from one person's photo to another's, in the same place and at the same
size, through ``POST /predict/video`` (the real pipeline: decoding, detection, the cut detector, the picture check
under each track, the tracker). No track may span two shots, each shot gets its tracks, and clips without a cut get
none."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from benchmarks.synth import Appearance, write_clip
from tests.conftest import jpeg, upload

SHOT_S = 2.0  # each person is shown this long
FPS = 5  # samples per second asked for


def post_video(client, path, query: str = f"sample_fps={FPS}&smoothing=0") -> dict:
    response = client.post(f"/predict/video?{query}", files=upload(path.read_bytes(), "v.mp4", "video/mp4"))
    assert response.status_code == 200, response.text
    return response.json()


def person(path) -> str:
    return re.sub(r"_\d+$", "", path.stem)


@pytest.fixture(scope="module")
def people(client, photo_paths) -> list[np.ndarray]:
    """Nine photos of nine different people, 300 x 300, in each of which the service finds exactly one face."""
    chosen: dict[str, np.ndarray] = {}
    for path in photo_paths:
        image = cv2.imread(str(path))
        if person(path) in chosen or image is None or min(image.shape[:2]) < 200:
            continue
        image = cv2.resize(image, (300, 300), interpolation=cv2.INTER_AREA)
        if len(client.post("/predict/image", files=upload(jpeg(image))).json()["faces"]) == 1:
            chosen[person(path)] = image
        if len(chosen) == 9:
            return list(chosen.values())
    pytest.skip("fewer than nine people with one face found in the shared photos")


def shots_of(photos, xy=(170, 90), velocity=(0.0, 0.0)) -> list[Appearance]:
    """Each photo in turn for SHOT_S seconds, every one starting at the same place: a hard cut between them."""
    return [Appearance(p, i * SHOT_S, (i + 1) * SHOT_S, xy, velocity) for i, p in enumerate(photos)]


def shot_index(t: float) -> int:
    return int(t // SHOT_S + 1e-6)


def assert_one_shot_per_track(body: dict, shots: int) -> None:
    """No track spans two shots, and each shot's person is tracked for most of the shot."""
    spans = [(tr["first_seen"], tr["last_seen"]) for tr in body["tracks"]]
    assert all(shot_index(first) == shot_index(last) for first, last in spans), spans
    for shot in range(shots):
        longest = max((len(tr["timeline"]) for tr in body["tracks"] if shot_index(tr["first_seen"]) == shot), default=0)
        assert longest >= 0.8 * SHOT_S * FPS, (shot, spans)
    counts = body["detection"]
    assert counts["shot_cuts"] + counts["faces_replaced"] >= shots - 1, counts  # frame-wide, or under the track


@pytest.mark.parametrize("clip", [0, 1, 2])
def test_photos_of_three_people_cut_in_the_same_place_give_a_track_per_shot(client, people, tmp_path, clip):
    """On one static backdrop (only the photo changes, a third of the frame), as in the clips of issue 29: not a
    frame-wide cut, but the picture under the track is new."""
    photos = people[3 * clip : 3 * clip + 3]
    path = write_clip(tmp_path / "cuts.mp4", shots_of(photos), 3 * SHOT_S)
    assert_one_shot_per_track(post_video(client, path), 3)


def test_full_frame_cuts_and_faces_moving_within_shots_give_a_track_per_shot(client, people, tmp_path):
    """Each shot fills the frame; in a second clip each face drifts 20 px/s and the next starts where the last did."""
    full = write_clip(tmp_path / "full.mp4", shots_of(people[:3], (0, 0)), 3 * SHOT_S, size=(300, 300))
    assert_one_shot_per_track(post_video(client, full), 3)
    moving = write_clip(tmp_path / "moving.mp4", shots_of(people[3:7], velocity=(20, 6)), 4 * SHOT_S)
    assert_one_shot_per_track(post_video(client, moving), 4)


def test_with_cuts_off_a_track_runs_across_people(make_client, people, tmp_path):
    """What the cut detector prevents (EMOTION_VIDEO__SHOT_CUTS=false): the tracker alone follows the box."""
    path = write_clip(tmp_path / "cuts.mp4", shots_of(people[:3]), 3 * SHOT_S)
    body = post_video(make_client(video={"shot_cuts": False}), path)
    spans = [(tr["first_seen"], tr["last_seen"]) for tr in body["tracks"]]
    assert any(shot_index(first) != shot_index(last) for first, last in spans), spans
    assert (body["detection"]["shot_cuts"], body["detection"]["faces_replaced"]) == (0, 0)


def test_a_still_photo_and_a_slowly_moving_face_are_one_track_without_cuts(client, people, tmp_path):
    still = write_clip(tmp_path / "still.mp4", [Appearance(people[0], 0, 4.0, (170, 90))], 4.0)
    moving = write_clip(tmp_path / "slow.mp4", [Appearance(people[1], 0, 4.0, (40, 60), (60, 15))], 4.0)
    for path in (still, moving):
        body = post_video(client, path)
        assert (body["detection"]["shot_cuts"], body["detection"]["faces_replaced"]) == (0, 0)
        assert len(body["tracks"]) == 1 and len(body["tracks"][0]["timeline"]) >= 18


def test_the_offline_scorer_gives_a_track_per_person_too(people, tmp_path):
    """``python -m service.score`` runs the same pipeline with the same settings: three people, three tracks."""
    import csv

    from service.score import get_args_parser, main

    path = write_clip(tmp_path / "cuts.mp4", shots_of(people[6:9]), 3 * SHOT_S)
    out = tmp_path / "out"
    assert main(get_args_parser().parse_args([str(path), "--output", str(out), "--sample-fps", "5", "--no-plot"])) == 0
    with (out / "cuts.csv").open() as f:
        rows = list(csv.DictReader(f))
    times: dict[str, list[float]] = {}
    for row in rows:
        times.setdefault(row["track_id"], []).append(float(row["t"]))
    assert all(shot_index(min(t)) == shot_index(max(t)) for t in times.values()), times
    assert {shot_index(min(t)) for t in times.values() if len(t) >= 8} == {0, 1, 2}
