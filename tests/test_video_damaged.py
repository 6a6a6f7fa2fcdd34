"""Videos damaged at the start, in the middle and at the end: decoding reads past the unreadable frames to the end of
the stream, and the answer says what could not be analysed (``frames_unreadable``, the ``unreadable`` spans, a
warning), on the route, as a job and in ``service.score``; too little readable is a 422 (a failed job), not a
summary of what is left. (Issue 19: a clip with 10-60% of its bytes overwritten answered 200 with 5 of 50 frames
analysed and a timeline that stopped at 0.8 s, and nothing said so.)"""

from __future__ import annotations

import csv
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synth import Appearance, write_clip
from service.errors import InvalidInput
from service.schemas import VideoPredictionResponse
from service.score import get_args_parser, main
from service.video.decode import FrameSampler, Gap, Sampling, VideoInfo, clip_gaps, describe_gaps
from tests.conftest import upload

SECONDS, FPS = 10.0, 25
FRAMES = int(SECONDS * FPS)
# Damaged stretches as shares of the clip's media data (the index, moov, stays intact).
DAMAGE = {"start": (0.01, 0.3), "middle": (0.1, 0.6), "end": (0.8, 0.99), "most": (0.05, 0.9)}


def media_range(data: bytes) -> tuple[int, int]:
    """Where the ``mdat`` box's payload lies in an MP4 file (top-level boxes: 32-bit size, then type)."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"mdat":
            return offset + 8, offset + size
        offset += size
    raise AssertionError("no mdat box")


def damaged(clip: Path, where: str, folder: Path) -> Path:
    """A copy of ``clip`` with the ``where`` share of its frame data overwritten by random bytes."""
    data = bytearray(clip.read_bytes())
    lo, hi = media_range(bytes(data))
    start, end = (lo + int((hi - lo) * share) for share in DAMAGE[where])
    data[start:end] = np.random.default_rng(19).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    out = folder / f"{where}-{clip.name}"
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory, face_photo) -> Callable[[str], Path]:
    """``clips(where)``: the 10 s clip of a face (``intact``) or a copy damaged ``where``."""
    folder = tmp_path_factory.mktemp("damaged")
    intact = write_clip(folder / "clip.mp4", [Appearance(face_photo, 0, SECONDS, (100, 60))], SECONDS, fps=FPS)
    return lambda where: intact if where == "intact" else damaged(intact, where, folder)


def sample(path: Path, **sampling) -> tuple[list[float], VideoInfo]:
    sampler = FrameSampler(str(path), Sampling(**{"sample_fps": 5.0, **sampling}))
    return [t for t, _, _ in sampler], sampler.info


# --- the decoder -------------------------------------------------------------------------------------------------


def test_an_intact_clip_has_no_gaps(clips):
    times, info = sample(clips("intact"))
    assert len(times) == 50 and info.frames_decoded == FRAMES and info.gaps == [] and info.readable_share == 1.0


def test_a_header_rate_that_is_a_time_base_is_measured_from_the_frames(tmp_path, face_photo):
    """A rate of 1000 and over is taken for a container's time base (browsers' WebM says 1000), so the frames'
    own timestamps time the clip: 60 intact frames 1 ms apart are 0.06 s with no gap, not 60 frames of 0.2 s of
    which 59 went missing (a 422 before)."""
    path = write_clip(tmp_path / "fast.mp4", [Appearance(face_photo, 0, 0.06, (20, 20))], 0.06, fps=1000)
    times, info = sample(path)
    assert info.fps == 0.0 and info.frames_decoded == 60 and info.gaps == [] and info.readable_share == 1.0
    assert times == [0.0] and info.duration == pytest.approx(0.06) and info.span_frames == 60


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_decoding_reads_past_unreadable_frames_to_the_end(clips, where):
    times, info = sample(clips(where))
    assert info.gaps, "the damage went unnoticed"
    assert info.frames_decoded + info.frames_unreadable == pytest.approx(FRAMES, abs=2)  # every frame accounted for
    assert 0 < info.frames_unreadable < FRAMES
    lo, hi = DAMAGE[where]
    for gap in info.gaps:  # where the damaged bytes were, in time (frame sizes vary: a generous margin)
        assert lo * SECONDS - 1.5 <= gap.start < gap.end <= hi * SECONDS + 1.5, gap
    if where != "end":
        assert times[-1] >= SECONDS - 0.5, "the timeline stops short of the end"
    assert info.readable_share == pytest.approx(1 - sum(g.end - g.start for g in info.gaps) / SECONDS)
    assert all(not (g.start <= t < g.end) for t in times for g in info.gaps)


def test_a_damaged_end_is_a_gap_up_to_the_headers_duration(clips):
    times, info = sample(clips("end"))
    assert info.gaps[-1].end == pytest.approx(SECONDS, abs=0.05) or times[-1] >= SECONDS - 0.5


def test_too_little_readable_is_refused_above_the_threshold_only(clips):
    with pytest.raises(InvalidInput, match="MIN_READABLE_SHARE") as refused:
        sample(clips("most"), min_readable_share=0.5)
    assert "% of the analysed video decodes" in refused.value.detail
    times, info = sample(clips("most"), min_readable_share=0.0)
    assert times and info.readable_share < 0.5


def test_only_gaps_within_the_analysed_span_count(clips):
    _, whole = sample(clips("middle"))
    _, after = sample(clips("middle"), start=whole.gaps[-1].end + 0.5)
    assert after.gaps == [] and after.span[0] > whole.gaps[-1].end


def test_clip_gaps_and_describe_gaps():
    gaps = [Gap(1.0, 3.0, 50), Gap(5.0, 6.0, 25)]
    assert clip_gaps(gaps, 2.0, 5.5) == [Gap(2.0, 3.0, 25), Gap(5.0, 5.5, 12)]
    assert clip_gaps(gaps, 6.0, 9.0) == []
    assert describe_gaps(gaps) == "1.00-3.00 s, 5.00-6.00 s"
    assert describe_gaps([Gap(i, i + 0.5, 1) for i in range(7)]).endswith("and 2 more")


def test_a_stopped_reader_leaves_a_damaged_run_at_once(clips):
    """Cancellation (the consumer stops) is not held up by a long unreadable run: each failed grab checks it."""

    class Dead:  # a capture whose every grab fails, as in a long damaged stretch
        grabs = 0

        def grab(self) -> bool:
            self.grabs += 1
            return False

    sampler = FrameSampler(str(clips("intact")), Sampling(sample_fps=5.0))
    sampler.cap.release()
    sampler.cap, stop = Dead(), threading.Event()
    stop.set()
    assert sampler._grab(0, stop) is False and sampler.cap.grabs == 1


# --- the route, a job, the scorer --------------------------------------------------------------------------------


def post(client, path: Path, query: str = "sample_fps=2"):
    return client.post(f"/predict/video?{query}", files=upload(path.read_bytes(), path.name, "video/mp4"))


def test_the_route_analyses_the_readable_rest_and_says_what_is_missing(client, clips):
    intact = post(client, clips("intact")).json()
    response = post(client, clips("middle"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["frames_unreadable"] > 0 and body["unreadable"] and body["warnings"]
    assert "could not be decoded" in body["warnings"][0] and "read past" in body["warnings"][0]
    assert intact["frames_unreadable"] == 0 and intact["unreadable"] == [] and intact["warnings"] == []
    assert body["frames_analyzed"] >= intact["frames_analyzed"] * 0.4  # not cut off at the first failure
    last = max(p["t"] for track in body["tracks"] for p in track["timeline"])
    assert last >= SECONDS - 1.0
    spans = [(s["start"], s["end"]) for s in body["unreadable"]]
    assert all(not (a <= p["t"] < b) for track in body["tracks"] for p in track["timeline"] for a, b in spans)


@pytest.mark.parametrize("where", ["start", "end"])
def test_damage_at_either_end_is_reported_on_the_route(client, clips, where):
    body = post(client, clips(where)).json()
    assert body["frames_unreadable"] > 0 and body["warnings"], body


def test_the_route_refuses_a_clip_too_damaged_to_mean_anything(client, make_client, clips):
    response = post(client, clips("most"))
    assert response.status_code == 422
    assert "decodes" in response.json()["detail"] and "MIN_READABLE_SHARE" in response.json()["detail"]
    lenient = make_client(video={"min_readable_share": 0.0})
    body = post(lenient, clips("most")).json()
    assert body["frames_unreadable"] > FRAMES / 2 and body["warnings"]


def wait_job(client, job_id: str, timeout: float = 120) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def test_a_job_reports_unreadable_frames_or_fails_with_the_reason(client, clips):
    ids = {}
    for where in ("middle", "most"):
        clip = clips(where)
        accepted = client.post("/jobs/video?sample_fps=2", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
        assert accepted.status_code == 202, accepted.text
        ids[where] = accepted.json()["id"]
    partial, refused = wait_job(client, ids["middle"]), wait_job(client, ids["most"])
    assert partial["status"] == "succeeded" and partial["result"]["frames_unreadable"] > 0
    assert partial["result"]["warnings"] and partial["result"]["unreadable"]
    assert refused["status"] == "failed" and "MIN_READABLE_SHARE" in refused["error"]["detail"]


def test_the_scorer_writes_the_gaps_and_fails_a_clip_too_damaged(clips, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for where in ("middle", "most"):
        (inputs / f"{where}.mp4").write_bytes(clips(where).read_bytes())
    status = main(get_args_parser().parse_args([str(inputs), "--output", str(out), "--sample-fps", "2", "--no-plot"]))
    assert status == 1
    video = VideoPredictionResponse.model_validate_json((out / "middle.json").read_text())
    assert video.frames_unreadable > 0 and video.unreadable and video.warnings
    with (out / "summary.csv").open() as f:
        rows = {Path(r["file"]).stem: r for r in csv.DictReader(f)}
    assert int(rows["middle"]["frames_unreadable"]) == video.frames_unreadable and rows["middle"]["warning"]
    assert "MIN_READABLE_SHARE" in rows["most"]["error"]


def test_the_cli_prints_the_warning():
    from emotion_client.cli_render import render_video

    answer = {
        "model": {"name": "m", "version": "1"},
        **{"duration_s": 10.0, "width": 64, "height": 48, "frames_analyzed": 26, "sample_fps": 5, "tracks": []},
        "warnings": ["120 frames could not be decoded (1.00-5.80 s)"],
    }
    assert render_video("clip.mp4", answer).endswith("warning: 120 frames could not be decoded (1.00-5.80 s)")
