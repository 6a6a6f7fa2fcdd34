"""The box smoother (service/video/boxes.py): a still face keeps its box, a real move is caught up, a new track starts
raw. Pure: boxes in, boxes out, with detector-like noise from a seeded generator."""

from __future__ import annotations

import numpy as np
import pytest

from service.video.boxes import BoxSmoother, follow, smooth_boxes

STEP = 0.2  # 5 samples a second, the video route's default


def noisy_still(n: int, box=(200, 120, 160, 170), centre_sd=0.015, size_sd=0.02, seed=0) -> list[tuple]:
    """``n`` detections of one still face: centre and log size jittered like the detector's (sd in box units)."""
    rng = np.random.default_rng(seed)
    x, y, w, h = box
    out = []
    for _ in range(n):
        dx, dy, dw, dh = rng.normal(0, [centre_sd, centre_sd, size_sd, size_sd])
        nw, nh = w * np.exp(dw), h * np.exp(dh)
        cx, cy = x + w / 2 + dx * w, y + h / 2 + dy * h
        out.append((round(cx - nw / 2), round(cy - nh / 2), round(nw), round(nh)))
    return out


def spread(boxes: list[tuple]) -> float:
    """The largest standard deviation over centre x, centre y, width and height, in pixels."""
    a = np.array(boxes, float)
    centres = a[:, :2] + a[:, 2:] / 2
    return float(np.r_[centres.std(axis=0), a[:, 2:].std(axis=0)].max())


def test_a_still_face_keeps_almost_exactly_one_box():
    raw = noisy_still(50)
    smoothed = smooth_boxes([i * STEP for i in range(50)], raw)
    assert spread(raw) > 2.0  # the noise is real: pixels, not rounding
    assert spread(smoothed) < spread(raw) / 5
    assert len(set(smoothed)) <= 5  # mostly the very same box, so the same crop


def test_a_new_track_starts_at_its_raw_box():
    smoother = BoxSmoother()
    smoother.update(1, 0.0, (10, 10, 100, 100))
    assert smoother.update(2, 0.2, (300, 40, 80, 90)) == (300, 40, 80, 90)
    assert smoother.update(1, 0.2, (11, 10, 100, 101)) == (10, 10, 100, 100)  # the old track kept its box


def test_a_real_move_is_caught_up_within_a_few_samples():
    start, moved = (200, 100, 150, 150), (245, 110, 150, 150)  # 30% of the box to the right: inside ``snap``
    boxes = [start] * 5 + [moved] * 6
    smoothed = smooth_boxes([i * STEP for i in range(len(boxes))], boxes)
    assert smoothed[4] == start
    assert smoothed[5][0] > start[0]  # it moves on the first sample after the move
    assert abs(smoothed[8][0] - moved[0]) <= 0.06 * 150  # within the deadband three samples later


def test_a_jump_and_a_zoom_are_taken_at_once():
    smoother = BoxSmoother()
    smoother.update(1, 0.0, (100, 100, 100, 100))
    assert smoother.update(1, 0.2, (400, 100, 100, 100)) == (400, 100, 100, 100)
    assert smoother.update(1, 0.4, (400, 100, 160, 160))[2:] == (160, 160)


def test_growth_is_followed_in_log_size():
    boxes = [(100, 100, 100, 100)] + [(90, 90, 120, 120)] * 5  # 20% larger about the same centre
    smoothed = smooth_boxes([i * STEP for i in range(6)], boxes)
    assert smoothed[1][2] > 100
    assert abs(smoothed[4][2] - 120) <= 120 * 0.06


def test_a_long_gap_follows_almost_fully():
    smoother = BoxSmoother()
    smoother.update(1, 0.0, (100, 100, 100, 100))
    x = smoother.update(1, 5.0, (120, 100, 100, 100))[0]
    assert x == 120


def test_follow_rules():
    assert follow(0.05, 0.06, 0.5, 0.35) == 0.0
    assert follow(-0.2, 0.06, 0.5, 0.35) == pytest.approx(-0.1)
    assert follow(0.5, 0.06, 0.5, 0.35) == 0.5


def test_retain_forgets_ended_tracks():
    smoother = BoxSmoother()
    smoother.update(1, 0.0, (0, 0, 50, 50))
    smoother.update(2, 0.0, (100, 0, 50, 50))
    smoother.retain([2])
    assert set(smoother.states) == {2}


@pytest.mark.parametrize("args", [{"deadband": -0.1}, {"tau": -1.0}, {"deadband": 0.3, "snap": 0.2}])
def test_bad_settings_are_refused(args):
    with pytest.raises(ValueError, match="deadband"):
        BoxSmoother(**args)
