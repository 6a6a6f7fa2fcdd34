"""POST /predict/video with generated clips of known content."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from threading import Event, current_thread

import cv2
import pytest

from benchmarks.synth import Appearance, write_clip
from tests.conftest import jpeg, metric, upload


def post_video(client, path, query: str = "", name: str = "v.mp4"):
    return client.post(f"/predict/video?{query}", files=upload(path.read_bytes(), name, "video/mp4"))


@pytest.fixture(scope="module")
def contrasting_faces(client, photo_paths):
    """Two real photos whose faces the default model labels differently and confidently (one detected face each)."""
    seen: dict[str, object] = {}
    for path in photo_paths[:300]:
        image = cv2.imread(str(path))
        faces = client.post("/predict/image", files=upload(jpeg(image))).json()["faces"]
        if len(faces) == 1 and faces[0]["emotions"][faces[0]["dominant"]] > 0.8:
            seen.setdefault(faces[0]["dominant"], image)
        if len(seen) >= 2:
            break
    assert len(seen) >= 2, "need two confidently different faces"
    (label_a, a), (label_b, b) = list(seen.items())[:2]
    return label_a, a, label_b, b


def test_a_cut_to_another_person_ends_the_track_within_one_sample(client, contrasting_faces, tmp_path):
    """Another person in the same place is a hard cut: two tracks, each with its own person's label and summary."""
    label_a, a, label_b, b = contrasting_faces
    clip = write_clip(
        tmp_path / "switch.mp4", [Appearance(a, 0, 2.0, (150, 80)), Appearance(b, 2.0, 4.0, (150, 80))], 4.0
    )
    body = post_video(client, clip, "sample_fps=5&smoothing=0").json()
    assert len(body["tracks"]) == 2 and body["detection"]["faces_replaced"] == 1
    first, second = sorted(body["tracks"], key=lambda t: t["first_seen"])
    assert first["last_seen"] < 2.0 and abs(second["first_seen"] - 2.0) <= 1 / 5 + 1e-6
    assert (first["summary"]["dominant"], second["summary"]["dominant"]) == (label_a, label_b)
    assert first["segments"][0]["dominant"] == label_a and first["segments"][-1]["end"] <= 2.0 + 1e-6
    assert body["summary"]["share"][label_a] == pytest.approx(0.5, abs=0.11)


def test_timestamps_are_monotonic_and_within_duration(client, face_photo, tmp_path):
    clip = write_clip(tmp_path / "move.mp4", [Appearance(face_photo, 0, 3.0, (20, 60), (60, 0))], 3.0, fps=30)
    body = post_video(client, clip, "sample_fps=4").json()
    assert body["duration_s"] == pytest.approx(3.0, abs=0.05) and body["fps"] == pytest.approx(30)
    assert body["frames_analyzed"] == 12
    timeline = body["tracks"][0]["timeline"]
    times, frames = [p["t"] for p in timeline], [p["frame"] for p in timeline]
    assert times == sorted(times) and frames == sorted(frames) and times[0] >= 0 and times[-1] <= body["duration_s"]
    assert times[1] - times[0] == pytest.approx(0.25, abs=0.04)
    xs = [p["box"]["x"] for p in timeline]
    assert xs[-1] - xs[0] > 100  # the box follows the moving face


@pytest.mark.parametrize(("gap", "tracks"), [(0.6, 1), (3.0, 2)])
def test_face_leaving_and_returning_keeps_or_reacquires_track(client, face_photo, tmp_path, gap, tracks):
    clip = write_clip(
        tmp_path / "gap.mp4",
        [Appearance(face_photo, 0, 1.5, (150, 80)), Appearance(face_photo, 1.5 + gap, 3.0 + gap, (170, 80))],
        3.0 + gap,
    )
    body = post_video(client, clip, "sample_fps=5").json()
    assert len(body["tracks"]) == tracks
    assert sum(len(t["timeline"]) for t in body["tracks"]) >= 13
    if tracks == 2:
        first, second = sorted(body["tracks"], key=lambda t: t["first_seen"])
        assert first["track_id"] != second["track_id"] and second["first_seen"] >= 1.5 + gap - 0.21


def test_a_low_sample_rate_keeps_a_still_face_in_one_track(client, face_photo, tmp_path):
    """Samples 2 s apart (sample_fps=0.5, as for hours of footage) are further apart than a track's 1.5 s of grace:
    each sample was a track of its own before; consecutive samples now continue one."""
    clip = write_clip(tmp_path / "slow.mp4", [Appearance(face_photo, 0, 8.0, (150, 80))], 8.0, fps=10)
    tracks = post_video(client, clip, "sample_fps=0.5").json()["tracks"]
    assert len(tracks) == 1 and [p["t"] for p in tracks[0]["timeline"]] == [0.0, 2.0, 4.0, 6.0]


def test_two_people_get_two_tracks_ordered_by_presence(client, face_photo, tmp_path):
    small = cv2.resize(face_photo, None, fx=0.8, fy=0.8)
    clip = write_clip(
        tmp_path / "two.mp4",
        [Appearance(face_photo, 0, 3, (10, 60)), Appearance(small, 1, 3, (380, 100))],
        3.0,
        size=(720, 480),
    )
    tracks = post_video(client, clip, "sample_fps=5").json()["tracks"]
    assert len(tracks) == 2 and len(tracks[0]["timeline"]) > len(tracks[1]["timeline"])
    assert tracks[1]["first_seen"] >= 0.8


def test_start_end_and_max_frames_limit_the_analysis(client, face_photo, tmp_path):
    clip = write_clip(tmp_path / "long.mp4", [Appearance(face_photo, 0, 4, (100, 60))], 4.0)
    body = post_video(client, clip, "sample_fps=5&start=1&end=2").json()
    times = [p["t"] for p in body["tracks"][0]["timeline"]]
    assert min(times) >= 1.0 - 1e-6 and max(times) <= 2.0 + 1e-6
    assert post_video(client, clip, "sample_fps=5&max_frames=3").json()["frames_analyzed"] == 3


def test_smoothing_reduces_frame_to_frame_change(make_client, contrasting_faces, tmp_path):
    _, a, _, b = contrasting_faces
    flicker = [Appearance(a if i % 2 else b, i * 0.2, (i + 1) * 0.2, (150, 80)) for i in range(15)]
    clip = write_clip(tmp_path / "flicker.mp4", flicker, 3.0)
    client = make_client(video={"shot_cuts": False})  # each flicker is a cut: one track only with cuts off

    def jitter(query):
        timeline = post_video(client, clip, query).json()["tracks"][0]["timeline"]
        vectors = [list(p["emotions"].values()) for p in timeline]
        return sum(sum(abs(x - y) for x, y in zip(u, v, strict=True)) for u, v in itertools.pairwise(vectors))

    assert jitter("sample_fps=5&smoothing=1.0") < jitter("sample_fps=5&smoothing=0") * 0.6


def test_video_of_small_face_crops_gets_a_timeline(client, fer_root, tmp_path):
    faces = [cv2.resize(cv2.imread(str(p)), (96, 96)) for p in sorted((fer_root / "val" / "happy").glob("*.jpg"))[:3]]
    clip = write_clip(
        tmp_path / "crops.mp4",
        [Appearance(f, i, i + 1, (0, 0)) for i, f in enumerate(faces)],
        3.0,
        fps=10,
        size=(96, 96),
    )
    body = post_video(client, clip, "sample_fps=5").json()
    assert sum(len(t["timeline"]) for t in body["tracks"]) == 15
    assert body["summary"]["dominant"] == "happy"


def test_video_without_faces_returns_empty_tracks(client, tmp_path):
    clip = write_clip(tmp_path / "empty.avi", [], 2.0, fourcc="MJPG")
    response = post_video(client, clip, name="empty.avi")
    body = response.json()
    assert (
        response.status_code == 200
        and body["tracks"] == []
        and body["summary"] is None
        and body["frames_analyzed"] == 10
    )


def mp4_with_tracks(*kinds: bytes) -> bytes:
    """An mp4 whose tracks are of these kinds (``hdlr`` handler types) and hold nothing a decoder can read."""

    def box(name: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + name + payload

    tracks = b"".join(
        box(b"trak", box(b"mdia", box(b"hdlr", bytes(8) + kind + bytes(12) + b"x\x00"))) for kind in kinds
    )
    return box(b"ftyp", b"M4A \x00\x00\x02\x00isom") + box(b"moov", tracks) + box(b"mdat", bytes(4000))


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"", 422, "empty"),
        (b"just some text, not a video at all", 415, "unsupported video container"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000, 422, "could not be opened"),
        (b"\x1a\x45\xdf\xa3" + b"\x13" * 4000, 422, "could not be opened"),
        (mp4_with_tracks(b"soun"), 422, "no video stream, only sound"),  # a voice memo, an .m4a
        (mp4_with_tracks(b"soun", b"vide"), 422, "could not be opened"),  # a video track that does not decode
    ],
)
def test_bad_video_gets_clear_4xx(client, data, status, fragment):
    response = client.post("/predict/video", files=upload(data, "v.mp4", "video/mp4"))
    assert response.status_code == status and fragment in response.json()["detail"]


@pytest.mark.parametrize("suffix", ["ts", "m2ts"])
def test_mpeg_ts_from_broadcast_cctv_and_camcorders_is_read_like_mp4(client, face_photo, tmp_path, suffix):
    """MPEG-TS (188-byte packets) and camcorders' M2TS (192-byte) were refused as an unsupported container."""
    appearances = [Appearance(face_photo, 0, 2, (100, 60))]
    mp4 = post_video(client, write_clip(tmp_path / "c.mp4", appearances, 2.0)).json()
    response = post_video(client, write_clip(tmp_path / f"c.{suffix}", appearances, 2.0), name=f"c.{suffix}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration_s"] == mp4["duration_s"] and body["frames_analyzed"] == mp4["frames_analyzed"] == 10
    assert len(body["tracks"]) == len(mp4["tracks"]) == 1


def test_video_limits_give_413(make_client, face_photo, tmp_path):
    clip = write_clip(tmp_path / "c.mp4", [Appearance(face_photo, 0, 3, (100, 60))], 3.0)
    too_long = make_client(max_video_duration_s=1.0)
    response = post_video(too_long, clip)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    too_big = make_client(max_video_bytes=2048)
    assert post_video(too_big, clip).status_code == 413


def test_bad_query_values_are_422(client, face_photo, tmp_path):
    clip = write_clip(tmp_path / "q.mp4", [Appearance(face_photo, 0, 1, (100, 60))], 1.0)
    for query in ("sample_fps=0", "start=2&end=1", "smoothing=-1", "max_frames=0"):
        assert post_video(client, clip, query).status_code == 422, query


def test_temp_files_are_removed_after_success_and_failure(make_client, face_photo, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    client = make_client(temp_dir=spool)
    clip = write_clip(tmp_path / "t.mp4", [Appearance(face_photo, 0, 1, (100, 60))], 1.0)
    assert post_video(client, clip).status_code == 200
    assert (
        client.post("/predict/video", files=upload(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 99, "v.mp4")).status_code
        == 422
    )
    assert client.post("/predict/video", files=upload(b"text", "v.mp4")).status_code == 415
    assert list(spool.iterdir()) == []


def test_video_metrics_are_exported(client, face_photo, tmp_path):
    clip = write_clip(tmp_path / "m.mp4", [Appearance(face_photo, 0, 1, (100, 60))], 1.0)
    post_video(client, clip)
    text = client.get("/metrics").text
    for name in (
        "emotion_video_frames_decoded_total",
        "emotion_video_frames_analyzed_total",
        "emotion_video_processing_seconds_count",
        'emotion_video_detection_total{step="full_frame_passes"}',
    ):
        assert metric(text, name) > 0, name
    assert 'emotion_video_detection_total{step="full_frame_passes_put_off"}' in text


def test_wide_frame_with_a_medium_face_is_tracked_by_default(client, make_client, face_photo, tmp_path):
    face = cv2.resize(face_photo, None, fx=0.45, fy=0.45)  # a face of ~110 px in a 1280 px frame
    clip = write_clip(tmp_path / "wide.mp4", [Appearance(face, 0, 2.0, (500, 200))], 2.0, size=(1280, 720))
    body = post_video(client, clip, "sample_fps=5").json()
    assert len(body["tracks"]) == 1 and len(body["tracks"][0]["timeline"]) >= 9
    assert post_video(make_client(video_detector_max_side=480), clip, "sample_fps=5").json()["tracks"] == []
    assert post_video(client, clip, "sample_fps=5&min_face_size=400").json()["tracks"] == []


def test_faces_classified_during_the_scan_equal_those_classified_after_it(client, face_photo, tmp_path, monkeypatch):
    """Face models send chunks of faces to the model while the scan goes on (STREAM_CHUNK): the answer is the one
    a single pass after the scan gives, and the cadence's counts are reported."""
    import service.pipelines.video as video

    clip = write_clip(tmp_path / "s.mp4", [Appearance(face_photo, 0, 3.0, (150, 80), (20, 0))], 3.0)
    monkeypatch.setattr(video, "STREAM_CHUNK", 4)
    streamed = post_video(client, clip, "sample_fps=5").json()
    monkeypatch.setattr(video, "STREAM_CHUNK", 10**6)  # nothing sent before the scan ends: one pass in finish()
    once = post_video(client, clip, "sample_fps=5").json()
    assert streamed["tracks"] == once["tracks"] and len(streamed["tracks"][0]["timeline"]) == 15
    counts = streamed["detection"]
    assert counts["regions_searched"] + counts["regions_carried_forward"] >= 10
    # a moving face over a still backdrop: the first pass runs, the scheduled ones after it are put off
    assert counts["full_frame_passes"] == 1 and counts["full_frame_passes_put_off"] == 2


def test_videos_scan_on_their_own_threads_and_wait_their_turn(client, face_photo, tmp_path, monkeypatch):
    """Scans used the event loop's default executor: six long ones held every thread that photos, face crops and
    live streams hop to (a stream's frame waited 25 s behind seven uploads)."""
    import service.pipelines.video as video

    seen: list[str] = []
    scan = video.VideoPipeline.scan
    monkeypatch.setattr(
        video.VideoPipeline, "scan", lambda self, *a: (seen.append(current_thread().name), scan(self, *a))[1]
    )
    clip = write_clip(tmp_path / "c.mp4", [Appearance(face_photo, 0, 1, (100, 60))], 1.0)
    assert post_video(client, clip).status_code == 200 and seen[0].startswith("video-scan")

    pipeline, running, most, release = video.VideoPipeline(None, max_scans=2), [0], [0], Event()  # type: ignore[arg-type]

    def long_scan() -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        release.wait(10)
        running[0] -= 1

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        scans = [loop.run_in_executor(pipeline.executor, long_scan) for _ in range(12)]  # more than the default pool
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)  # what a photo's or a stream frame's hop waits for
        waited = time.perf_counter() - started
        release.set()
        await asyncio.gather(*scans)
        return waited

    assert asyncio.run(scenario()) < 1.0 and most[0] == 2
    pipeline.close()
