"""The video path's pure arithmetic: time-aware smoothing, segments, summaries, clip windows and frame choice,
per-track timelines from predictions (``build_tracks``), and the mirror merge and calibration it is fed by.
No model, detector or video file: every input is a small array built here."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_store import Manifest, Predictions, Predictor, Prepared, derive_valence_arousal, merge_mirror, probabilities
from service.results import Sample, Segment
from service.video.clips import window_frames
from service.video.timeline import segments, smooth, summarize, windows
from service.video.tracks import build_tracks
from tests.factories import manifest as make_manifest

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["angry", "happy", "sad"]


def manifest(**overrides) -> Manifest:
    return make_manifest(LABELS, **overrides)


def preds(probs: list[list[float]], va: list[list[float]] | None = None) -> Predictions:
    p = np.array(probs, np.float32)
    return Predictions(tuple(LABELS), np.log(p + 1e-6), p, None if va is None else np.array(va, np.float32))


# --- smooth ---------------------------------------------------------------------------------------------------


def test_smooth_step_input_reaches_one_minus_1_over_e_after_one_tau():
    out = smooth(np.array([0.0, 0.5]), np.array([[0.0], [1.0]]), tau=0.5)
    assert out[1, 0] == pytest.approx(1 - math.exp(-1))


def test_smooth_is_time_aware_two_half_steps_equal_one_full_step():
    one = smooth(np.array([0.0, 1.0]), np.array([0.0, 1.0]), tau=1.0)
    two = smooth(np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0]), tau=1.0)
    assert two[2] == pytest.approx(one[1]) == pytest.approx(1 - math.exp(-1))


def test_smooth_with_tau_zero_returns_the_input_unchanged():
    values = np.array([[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_array_equal(smooth(np.array([0.0, 0.2]), values, 0.0), values)


def test_smooth_does_not_modify_its_input_and_keeps_the_first_sample():
    values = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    before = values.copy()
    out = smooth(np.array([0.0, 0.2, 0.4]), values, 0.3)
    np.testing.assert_array_equal(values, before)
    np.testing.assert_array_equal(out[0], before[0])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)  # a convex mix of distributions stays a distribution


def test_smooth_longer_gap_forgets_more():
    values = np.array([0.0, 1.0])
    near = smooth(np.array([0.0, 0.1]), values, 0.5)[1]
    far = smooth(np.array([0.0, 2.0]), values, 0.5)[1]
    assert near == pytest.approx(1 - math.exp(-0.2)) and far == pytest.approx(1 - math.exp(-4.0))


# --- segments -------------------------------------------------------------------------------------------------


def test_segments_runs_of_one_label_cover_step_each():
    got = segments([0.0, 0.2, 0.4, 0.6], ["happy", "happy", "sad", "sad"], step=0.2, duration=0.0)
    assert got == [Segment(0.0, 0.4, "happy"), Segment(0.4, 0.8, "sad")]


def test_segments_merge_across_a_one_sample_gap():
    got = segments([0.0, 0.2, 0.6], ["happy"] * 3, step=0.2, duration=0.0)
    assert got == [Segment(0.0, 0.8, "happy")]


def test_segments_do_not_merge_across_a_two_sample_gap():
    got = segments([0.0, 0.2, 0.8], ["happy"] * 3, step=0.2, duration=0.0)
    assert got == [Segment(0.0, 0.4, "happy"), Segment(0.8, 1.0, "happy")]


def test_segments_last_end_is_clipped_to_the_duration_and_rounded():
    got = segments([0.1, 0.3, 0.5], ["sad"] * 3, step=0.2, duration=0.62)
    assert got == [Segment(0.1, 0.62, "sad")]
    assert segments([0.1], ["sad"], step=0.2, duration=0.0)[0].end == 0.3  # not 0.30000000000000004


def test_segments_of_no_samples_are_empty():
    assert segments([], [], step=0.2, duration=1.0) == []


# --- summarize ------------------------------------------------------------------------------------------------


def test_summarize_means_shares_and_valence_arousal():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    va = np.array([[0.5, 0.1], [-0.5, 0.3], [0.3, 0.2]])
    s = summarize(probs, va, LABELS)
    assert s.emotions == pytest.approx({"angry": 1.4 / 3, "happy": 1.3 / 3, "sad": 0.1})
    assert s.dominant == "angry"
    assert s.share == pytest.approx({"angry": 2 / 3, "happy": 1 / 3, "sad": 0.0})
    assert sum(s.share.values()) == pytest.approx(1.0)
    assert (s.valence, s.arousal) == (pytest.approx(0.1), pytest.approx(0.2))


def test_summarize_dominant_is_the_mean_not_the_most_frequent_label():
    probs = np.array([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.0, 1.0, 0.0]])
    s = summarize(probs, None, LABELS)
    assert s.dominant == "happy" and s.share["angry"] == pytest.approx(2 / 3)
    assert s.valence is None and s.arousal is None


# --- windows and clip frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (10, 4, [(0, 4), (4, 8), (8, 10)]),  # a tail of half a window stays on its own
        (9, 4, [(0, 4), (4, 9)]),  # a shorter tail joins the last window
        (5, 4, [(0, 5)]),
        (17, 16, [(0, 17)]),
        (8, 4, [(0, 4), (4, 8)]),
        (3, 4, [(0, 3)]),  # one short window is kept
        (0, 4, []),
        (3, 1, [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_windows(n, size, expected):
    assert windows(n, size) == expected


def test_windows_cover_every_sample_once():
    for n in range(1, 30):
        for size in (1, 2, 3, 5, 8):
            bounds = windows(n, size)
            assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))


def test_window_frames_spread_evenly_and_repeat_when_short():
    assert window_frames(list(range(10, 18)), 4) == [10, 12, 15, 17]
    assert window_frames([3, 4], 4) == [3, 3, 4, 4]
    assert window_frames([7], 3) == [7, 7, 7]
    assert window_frames([1, 2, 3, 4], 4) == [1, 2, 3, 4]


# --- build_tracks ---------------------------------------------------------------------------------------------

BOX = (10, 10, 40, 40)


def test_build_tracks_orders_by_presence_then_first_seen():
    ids = [1, 2, 2, 3, 3]
    samples = [Sample(round(0.2 * i, 1), i, BOX, track) for i, track in enumerate(ids)]
    p = preds([[0.8, 0.1, 0.1]] * 5)
    tracks, _ = build_tracks(manifest(), p, samples, smoothing=0.0, step=0.2, duration=1.0)
    assert [t.track_id for t in tracks] == [2, 3, 1]
    assert (tracks[0].first_seen, tracks[0].last_seen) == (0.2, 0.4)
    assert [(s.t, s.frame, s.box) for s in tracks[1].timeline] == [(0.6, 3, BOX), (0.8, 4, BOX)]


def test_build_tracks_smooths_each_track_separately_and_segments_the_smoothed_labels():
    samples = [Sample(0.0, 0, BOX, 1), Sample(0.25, 1, BOX, 2), Sample(0.5, 2, BOX, 1)]
    p = preds([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    tracks, _ = build_tracks(manifest(), p, samples, smoothing=0.5, step=0.25, duration=1.0)
    one = next(t for t in tracks if t.track_id == 1)
    a = math.exp(-1)  # 0.5 s between track 1's samples, tau 0.5 s; track 2's sample in between is not mixed in
    assert one.timeline[1].prediction.emotions == pytest.approx({"angry": a, "happy": 1 - a, "sad": 0.0}, abs=1e-6)
    assert [s.dominant for s in one.segments] == ["angry", "happy"]  # 1 - 1/e > 1/e
    assert one.summary.emotions == pytest.approx({"angry": (1 + a) / 2, "happy": (1 - a) / 2, "sad": 0.0}, abs=1e-6)


def test_build_tracks_derived_valence_arousal_comes_from_smoothed_probabilities():
    samples = [Sample(0.0, 0, BOX, 1), Sample(0.5, 1, BOX, 1)]
    p = preds([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    tracks, summary = build_tracks(manifest(), p, samples, smoothing=0.5, step=0.5, duration=1.0)
    a = math.exp(-1)
    expected = derive_valence_arousal(np.array([[0.0, a, 1 - a]]), LABELS)[0]
    second = tracks[0].timeline[1].prediction
    assert second.valence == pytest.approx(expected[0], abs=1e-6)
    assert second.arousal == pytest.approx(expected[1], abs=1e-6)
    assert summary is not None and summary.valence == pytest.approx(tracks[0].summary.valence, abs=1e-6)


def test_build_tracks_predicted_valence_arousal_is_smoothed_and_clipped():
    m = manifest(task="face-multitask", outputs=["logits", "valence_arousal"], valence_arousal="predicted")
    samples = [Sample(0.0, 0, BOX, 1), Sample(0.5, 1, BOX, 1)]
    p = preds([[0.0, 1.0, 0.0]] * 2, va=[[3.0, -0.5], [0.0, -0.5]])
    raw, _ = build_tracks(m, p, samples, smoothing=0.0, step=0.5, duration=1.0)
    assert [(s.prediction.valence, s.prediction.arousal) for s in raw[0].timeline] == [(1.0, -0.5), (0.0, -0.5)]
    inside = preds([[0.0, 1.0, 0.0]] * 2, va=[[0.8, -0.5], [0.0, -0.5]])
    smoothed, _ = build_tracks(m, inside, samples, smoothing=0.5, step=0.5, duration=1.0)
    second = smoothed[0].timeline[1].prediction
    assert (second.valence, second.arousal) == (pytest.approx(0.8 * math.exp(-1)), pytest.approx(-0.5))


def test_build_tracks_without_valence_arousal_reports_none():
    samples = [Sample(0.0, 0, BOX, 1), Sample(0.2, 1, BOX, 1)]
    tracks, summary = build_tracks(
        manifest(valence_arousal="none"), preds([[0.1, 0.8, 0.1]] * 2), samples, 0.25, 0.2, 1.0
    )
    assert tracks[0].timeline[0].prediction.valence is None
    assert tracks[0].summary.valence is None and summary is not None and summary.arousal is None


def test_build_tracks_clip_summary_is_over_every_smoothed_sample_of_every_track():
    samples = [Sample(0.0, 0, BOX, 1), Sample(0.0, 0, (60, 10, 40, 40), 2), Sample(0.2, 1, BOX, 1)]
    p = preds([[0.9, 0.05, 0.05], [0.0, 0.1, 0.9], [0.9, 0.05, 0.05]])
    _, summary = build_tracks(manifest(), p, samples, smoothing=0.0, step=0.2, duration=1.0)
    assert summary is not None
    assert summary.emotions == pytest.approx({"angry": 0.6, "happy": 0.2 / 3, "sad": 1.0 / 3})
    assert summary.share == pytest.approx({"angry": 2 / 3, "happy": 0.0, "sad": 1 / 3})


def test_build_tracks_of_no_samples_is_empty_with_no_summary():
    empty = Predictions.concat([], LABELS, with_va=True)
    assert build_tracks(manifest(), empty, [], 0.25, 0.2, 1.0) == ([], None)


# --- what the video path is fed: mirror merge before calibration ---------------------------------------------


def test_postprocess_merges_mirrored_logits_then_calibrates():
    m = manifest(calibration_temperature=2.0)
    outputs = {"logits": np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 4.0, 0.0]], np.float32)}
    got = Predictor(m, runner=None).postprocess(outputs, Prepared(np.zeros((4, 1, 48, 48)), n=2, mirrored=True))
    merged = merge_mirror(outputs["logits"], 2)
    np.testing.assert_allclose(got.logits, [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    np.testing.assert_allclose(got.probabilities, probabilities(merged, 2.0), atol=1e-6)
    assert got.probabilities[1, 1] == pytest.approx(math.e / (math.e + 2))  # softmax([0, 2, 0] / 2)


# --- importable on its own ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["service.video.timeline", "service.video.tracks", "service.video.clips", "service.results"]
)
def test_module_imports_in_a_fresh_interpreter(module):
    """No import cycle hides behind the order in which the app happens to import things."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-600:]
