"""benchmarks.bench_stream: the figures it derives from a session's log, its frames' motion, and a short real run
against a live server with the fast model (no speed asserted: speed figures belong to the script)."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from benchmarks import bench_stream
from benchmarks.bench_stream import Reply, SessionLog, frame_positions, minute_stats, session_stats, window_stats


def steady_log(fps: float, frames: int, answered: range, latency: float = 0.02) -> SessionLog:
    """A session that sent on schedule from t=0 and got an answer ``latency`` s later for the frames in ``answered``."""
    sent = [k / fps for k in range(frames)]
    return SessionLog(fps, 0.0, sent, [Reply(k, sent[k] + latency, 5.0, 1) for k in answered])


def test_a_reply_counts_for_its_own_frame_and_the_rest_are_dropped():
    stats = window_stats(steady_log(10, 20, range(0, 20, 2), latency=0.03), 0, 20)
    assert (stats["frames_sent"], stats["results"]) == (20, 10)
    assert stats["dropped_share"] == pytest.approx(0.5)
    assert stats["delivered_fps"] == pytest.approx(5.0)
    assert stats["sent_fps"] == pytest.approx(10.0)
    assert stats["p50_ms"] == pytest.approx(30.0) and stats["p95_ms"] == pytest.approx(30.0)


def test_warm_up_frames_and_their_replies_are_left_out():
    log = steady_log(10, 30, range(30))
    log.replies = [Reply(r.seq, r.at + (1.0 if r.seq < 10 else 0.0), 5.0, 1) for r in log.replies]  # slow warm-up
    stats = session_stats(log, warmup_s=1.0)
    assert stats["frames_sent"] == 20 and stats["results"] == 20
    assert stats["p95_ms"] == pytest.approx(20.0)


def test_a_late_sender_lowers_the_rate_it_is_credited_with():
    log = steady_log(10, 11, range(11))
    log.sent = [k * 0.2 for k in range(11)]  # it managed 5 frames/s against 10 offered
    log.replies = [Reply(k, log.sent[k] + 0.01, 5.0, 1) for k in range(11)]
    stats = window_stats(log, 0, 11)
    assert stats["sent_fps"] < 5.5 and stats["delivered_fps"] < 5.5
    assert stats["sender_late_ms_p95"] > 500


def test_a_window_without_frames_says_so():
    with pytest.raises(ValueError, match=r"no frames were sent in slots 20\.\.29"):
        window_stats(steady_log(10, 20, range(20)), 20, 30)


def test_the_soak_is_binned_by_minute_of_sending():
    log = steady_log(2, 2 * 60 * 3, [k for k in range(360) if k < 120 or k % 2 == 0])
    rows = minute_stats(log, warmup_s=0.0, minutes=3)
    assert [r["frames_sent"] for r in rows] == [120, 120, 120]
    assert [r["dropped_share"] for r in rows] == pytest.approx([0.0, 0.5, 0.5])


def test_the_worst_and_best_session_are_reported():
    fast, slow = window_stats(steady_log(10, 20, range(20)), 0, 20), window_stats(steady_log(10, 20, range(5)), 0, 20)
    summary = bench_stream.sessions_summary([fast, slow])
    assert summary["delivered_fps_min"] == pytest.approx(2.5) and summary["delivered_fps_max"] == pytest.approx(10)
    assert summary["dropped_share"] == pytest.approx(15 / 40)


def test_the_motion_loops_smoothly_and_two_faces_never_overlap():
    for faces in (1, 2):
        path = [frame_positions(i, faces) for i in range(bench_stream.LOOP_FRAMES + 1)]
        assert path[0] == path[-1]  # the loop joins
        steps = [math.dist(a[0], b[0]) for a, b in itertools.pairwise(path)]
        assert 0 < max(steps) <= 4  # it moves, a little per frame
    assert all(left[0] + bench_stream.FACE_PX < right[0] for left, right in (frame_positions(i, 2) for i in range(60)))


def test_goals_compare_the_run_with_the_issue_targets():
    results = {"fast_1x30": {"delivered_fps": 29.97, "p95_ms": 61.0}}
    checks = {g["measure"]: g["met"] for g in bench_stream.goals(results, {"fast": {"ratio": 1.4}})}
    assert checks == {"delivered_fps": True, "p95_ms": False, "ratio": True}


def test_a_short_run_against_a_live_server_writes_every_figure(tmp_path):
    args = bench_stream.get_args_parser().parse_args(
        ["--only", "fast_1x30", "fast_image_loop", "--seconds", "2", "--warmup", "1", "--output", str(tmp_path)]
    )
    bench_stream.main(args)
    out = json.loads((tmp_path / "bench_stream.json").read_text())
    stream, loop = out["scenarios"]["fast_1x30"], out["scenarios"]["fast_image_loop"]
    assert stream["model"] == "fer_emotion_cnn" and stream["frames_sent"] == 60
    assert stream["results"] > 0 and stream["delivered_fps"] > 0 and stream["p95_ms"] > 0
    assert stream["faces_per_result"] > 0 and stream["tracks"] >= 1 and stream["errors"] == 0
    assert stream["server_counts"]["received"] == 90  # warm-up included: the server counts every frame
    assert stream["server_rss_mb"] > 0 and stream["server_cpu_share"] > 0
    assert loop["requests"] > 0 and loop["errors"] == 0
    assert out["ratios"]["fast"]["ratio"] > 0 and {g["measure"] for g in out["goals"]} >= {"delivered_fps", "ratio"}
    assert (tmp_path / "bench_stream.png").stat().st_size > 0
