"""``WS /stream`` end to end: a real server (``python -m service``), the real default model, real WebSockets through
the ``websockets`` client. The close-code contract (every limit), the API key's three places, results frame by
frame (stable track ids, the same answers as ``/predict/video`` on the same frames), newest-wins dropping, and a
soak of connects and disconnects that must leave nothing behind."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection

from benchmarks.synth import Appearance, write_clip
from emotion_client.stream_messages import SUBPROTOCOL, StreamResult, StreamSummary
from tests.live import serve
from tests.stream_support import (
    InProcessService,
    closed_with,
    decoded_frames,
    frame_message,
    metric_value,
    moving_face,
    recv,
    results_until,
    send_json,
    session,
    start,
)

KEY = "s3cret-key"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> str:
    """The service with an API key and default stream limits."""
    with serve(log=tmp_path_factory.mktemp("keyed") / "service.log", API_KEY=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def tight(tmp_path_factory) -> str:
    """One session at a time, 1.5 s idle timeout, 4 s sessions; the store also holds a frame-attributes model."""
    root = tmp_path_factory.mktemp("tight")
    store = root / "store"
    for name in ("emotion_transfer", "retinaface", "dlib_face_descriptor"):
        (store / name).mkdir(parents=True)
        for version in (ROOT / "model_store" / name).iterdir():
            (store / name / version.name).symlink_to(version)
    frame_model = store / "frame_attr" / "1.0.0"
    shutil.copytree(ROOT / "model_store" / "fer_emotion_cnn" / "1.3.0", frame_model)
    manifest = json.loads((frame_model / "manifest.json").read_text())
    labels = manifest["labels"]
    manifest.update(name="frame_attr", version="1.0.0", task="frame-attributes", valence_arousal="none")
    manifest["thresholds"] = dict.fromkeys(labels, 0.5)
    (frame_model / "manifest.json").write_text(json.dumps(manifest))
    settings = {
        "STORE_PATH": str(store),
        "STREAM__MAX_SESSIONS": "1",
        "STREAM__IDLE_TIMEOUT_S": "1.5",
        "STREAM__MAX_SESSION_S": "4",
    }
    with serve(log=root / "service.log", **settings) as url:
        yield url


@pytest.fixture(scope="module")
def walk(face_photo):
    """A face moving slowly right across a 640 x 480 canvas, 12 frames."""
    return moving_face(face_photo, 12)


def result(ws: ClientConnection) -> dict:
    message = recv(ws)
    assert message["type"] == "result", message
    StreamResult.model_validate(message)
    return message


# --- the options, frames and close-code contract --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"type": "options", "colour": "red"}), "unknown option 'colour'"),
        (json.dumps({"type": "options", "max_faces": 0}), "max_faces"),
        (json.dumps({"type": "options", "smoothing": "lots"}), "smoothing"),
        (json.dumps({"type": "options", "model": "no_such_model"}), "no_such_model"),
    ],
)
def test_a_malformed_options_message_closes_with_1007_and_says_why(keyed, options, fragment):
    with session(keyed, key=KEY) as ws:
        ws.send(options)
        code, reason = closed_with(ws)
    assert code == 1007 and fragment in reason


def test_a_frame_attributes_model_is_refused_with_1007(tight):
    with session(tight) as ws:
        send_json(ws, {"type": "options", "model": "frame_attr"})
        code, reason = closed_with(ws)
    assert code == 1007 and "face model" in reason


def test_key_in_any_of_three_places_is_accepted(keyed, walk):
    with session(keyed, key=KEY) as ws:  # the X-API-Key header
        start(ws)
        ws.send(frame_message(walk[0], 0.0))
        assert result(ws)["faces"]
    with session(keyed, subprotocols=[SUBPROTOCOL, f"key.{KEY}"]) as ws:  # a browser's way
        assert ws.subprotocol == SUBPROTOCOL
        start(ws)
    with session(keyed) as ws:  # the options message
        ready = start(ws, api_key=KEY)
        assert ready["model"]["name"] and ready["labels"] and ready["max_frame_bytes"] == 4 * 1024 * 1024


@pytest.mark.parametrize("where", ["none", "header", "subprotocol", "options"])
def test_a_session_without_the_key_or_with_a_wrong_one_is_closed_with_1008(keyed, walk, where):
    kwargs = {"header": {"key": "wrong"}, "subprotocol": {"subprotocols": [SUBPROTOCOL, "key.wrong"]}}
    with session(keyed, **kwargs.get(where, {})) as ws:
        if where in ("none", "options"):  # nothing in the handshake: the first message must carry it
            send_json(ws, {"type": "options", **({"api_key": "wrong"} if where == "options" else {})})
        code, reason = closed_with(ws)
    assert code == 1008 and "key" in reason.lower()
    with session(keyed) as ws:  # a frame first, with no key anywhere
        ws.send(frame_message(walk[0]))
        assert closed_with(ws)[0] == 1008


def test_a_frame_over_the_size_limit_closes_with_1009(keyed):
    with session(keyed, key=KEY) as ws:
        start(ws)
        ws.send(b"\xff\xd8\xff" + bytes(4 * 1024 * 1024))
        code, reason = closed_with(ws)
    assert code == 1009 and "limit" in reason
    with session(keyed, key=KEY) as ws:  # far over it: the protocol refuses it before reading it whole
        start(ws)
        ws.send(bytes(8 * 1024 * 1024))
        assert closed_with(ws)[0] == 1009


def test_one_session_over_max_sessions_is_closed_with_1013(tight):
    with session(tight) as first:
        start(first)
        with session(tight) as second:
            code, reason = closed_with(second)
        assert code == 1013 and "try again" in reason
        assert httpx.get(tight + "/health/ready").status_code == 200  # sessions are not requests: still ready
        send_json(first, {"type": "summary"})
        assert recv(first)["type"] == "summary"  # the session that had the place goes on
    time.sleep(0.3)
    with session(tight) as third:  # the place is free again
        start(third)


def test_an_idle_session_is_closed_with_1001(tight):
    with session(tight) as ws:
        start(ws)
        began = time.monotonic()
        code, reason = closed_with(ws, timeout=10)
    assert code == 1001 and "idle" in reason and 1.4 <= time.monotonic() - began < 5


def test_a_session_past_max_session_s_gets_its_summary_then_1001(tight, walk):
    with session(tight) as ws:
        start(ws)
        messages, began = [], time.monotonic()
        for i in range(6):  # 3 s of frames (the idle timeout is 1.5 s), then the 4 s limit comes first
            ws.send(frame_message(walk[i], i * 0.5))
            messages.append(recv(ws, timeout=10))
            time.sleep(max(0.0, began + (i + 1) * 0.5 - time.monotonic()))
        code, reason = closed_with(ws, seen=messages)
    summaries = [m for m in messages if m["type"] == "summary"]
    assert code == 1001 and "longer than 4" in reason and 3.5 < time.monotonic() - began < 15
    assert summaries and summaries[-1]["final"] is True and summaries[-1]["frames"]["analysed"] >= 3


def test_a_bad_frame_gets_an_error_and_the_next_one_a_result(keyed, walk):
    with session(keyed, key=KEY) as ws:
        start(ws)
        ws.send(frame_message(walk[0], 0.0))
        assert result(ws)["seq"] == 0
        ws.send(b"not an image at all")
        error = recv(ws)
        assert error == {"type": "error", "seq": 1, "detail": error["detail"]} and "format" in error["detail"]
        ws.send(frame_message(walk[1], 0.2))
        after = result(ws)
        assert after["seq"] == 2 and len(after["faces"]) == 1
        send_json(ws, {"type": "summary"})
        summary = StreamSummary.model_validate(recv(ws))
    assert summary.final is False
    assert summary.frames.model_dump() == {"received": 3, "analysed": 2, "bad": 1, "dropped": 0}


@pytest.mark.parametrize("bad", [1e300, 1.7e12, -2.0, float("nan"), float("inf")])
def test_a_capture_time_that_is_not_seconds_gets_an_error_and_later_times_stay_true(keyed, walk, bad):
    """Times never go back, so one garbage time (or milliseconds sent as seconds) once became every later frame's."""
    with session(keyed, key=KEY) as ws:
        start(ws)
        ws.send(frame_message(walk[0], 0.0))
        result(ws)
        ws.send(frame_message(walk[1], bad))
        error = recv(ws)
        assert error["type"] == "error" and error["seq"] == 1 and "capture time" in error["detail"]
        ws.send(frame_message(walk[2], 0.4))
        assert result(ws)["t"] == 0.4
        send_json(ws, {"type": "summary"})
        summary = StreamSummary.model_validate(recv(ws))
    assert summary.frames.bad == 1 and summary.tracks[0].last_seen == 0.4


def test_summary_and_close_controls(keyed, walk):
    with session(keyed, key=KEY) as ws:
        start(ws, smoothing=0.5)
        for i, frame in enumerate(walk[:4]):
            ws.send(frame_message(frame, i * 0.2))
            result(ws)
        send_json(ws, {"type": "summary"})
        running = recv(ws)
        send_json(ws, {"type": "close"})
        final = recv(ws)
        code, _ = closed_with(ws)
    assert running["type"] == final["type"] == "summary" and running["final"] is False and final["final"] is True
    [track] = final["tracks"]
    assert track["samples"] == 4 and track["first_seen"] == 0.0 and track["last_seen"] == 0.6
    assert track["segments"][0]["start"] == 0.0 and track["summary"]["dominant"] in track["summary"]["emotions"]
    assert final["summary"]["emotions"] == pytest.approx(track["summary"]["emotions"], abs=1e-6)
    assert code == 1000


def test_the_openapi_document_points_at_the_websocket_route_and_asyncapi(keyed):
    description = httpx.get(keyed + "/openapi.json").json()["info"]["description"]
    assert "WS /stream" in description and "/asyncapi.json" in description
    asyncapi = httpx.get(keyed + "/asyncapi.json").json()
    assert asyncapi["asyncapi"].startswith("2.6") and "/stream" in asyncapi["channels"]


# --- results --------------------------------------------------------------------------------------------------


def test_track_ids_are_stable_across_a_clip_streamed_frame_by_frame(keyed, face_photo):
    frames = moving_face(face_photo, 25, step_px=8)
    with session(keyed, key=KEY) as ws:
        start(ws)
        answers = []
        for i, frame in enumerate(frames):
            ws.send(frame_message(frame, i * 0.2))
            answers.append(result(ws))
    assert [len(a["faces"]) for a in answers] == [1] * len(frames)
    assert {a["faces"][0]["track_id"] for a in answers} == {answers[0]["faces"][0]["track_id"]}
    xs = [a["faces"][0]["box"]["x"] for a in answers]
    assert xs[-1] - xs[0] > 120 and all(a["skipped"] == 0 for a in answers)
    assert [a["t"] for a in answers] == [round(i * 0.2, 3) for i in range(len(frames))]


def test_results_equal_predict_video_on_the_same_frames(keyed, face_photo, tmp_path):
    """The same decoded frames as a 5 fps mp4 (sample_fps 5) and as PNG frames 0.2 s apart: the same tracks,
    boxes, dominant labels and smoothed emotions."""
    fps, small = 5, face_photo[::2, ::2].copy()
    clip = write_clip(
        tmp_path / "two.mp4",
        [Appearance(face_photo, 0, 4.0, (20, 40), (30, 0)), Appearance(small, 1.0, 3.4, (420, 200), (-10, 0))],
        4.0,
        fps=fps,
    )
    video = httpx.post(
        keyed + "/predict/video?sample_fps=5&smoothing=0.5",
        files={"file": ("two.mp4", clip.read_bytes(), "video/mp4")},
        headers={"X-API-Key": KEY},
        timeout=300,
    ).json()
    frames = decoded_frames(clip)
    assert video["frames_analyzed"] == len(frames) == 20
    with session(keyed, key=KEY) as ws:
        start(ws, smoothing=0.5, full_detect_every_s=1.0)  # the video group's default cadence
        streamed = []
        for i, frame in enumerate(frames):
            ws.send(frame_message(frame, i / fps))
            streamed.append(result(ws))
    by_time = {
        (p["t"], (p["box"]["x"], p["box"]["y"])): (track["track_id"], p)
        for track in video["tracks"]
        for p in track["timeline"]
    }
    pairs: set[tuple[int, int]] = set()
    for answer in streamed:
        for face in answer["faces"]:
            key = (answer["t"], (face["box"]["x"], face["box"]["y"]))
            assert key in by_time, f"the stream found {key} where the video did not"
            video_track, point = by_time.pop(key)
            pairs.add((face["track_id"], video_track))
            assert face["box"] == point["box"] and face["dominant"] == point["dominant"]
            assert face["emotions"] == pytest.approx(point["emotions"], abs=2e-3)
    assert not by_time, f"the video found faces the stream did not: {sorted(by_time)}"
    assert len(pairs) == len({s for s, _ in pairs}) == len({v for _, v in pairs}) == len(video["tracks"]) >= 2


def burst(url: str, messages: list[bytes]) -> tuple[list[dict], dict]:
    """Every message sent at once, then the results up to the last one, and the session's counts."""
    with session(url, key=KEY) as ws:
        start(ws)
        for message in messages:
            ws.send(message)
        answers = results_until(ws, len(messages) - 1)
        send_json(ws, {"type": "summary"})
        return answers, recv(ws)["frames"]


def test_the_newest_frame_wins_and_skipped_counts_the_drops(keyed, walk):
    messages = [frame_message(walk[i % len(walk)], i * 0.04) for i in range(30)]  # encoded before the burst
    for _ in range(3):  # a starved client (a loaded machine) can send slower than the server reads: try again
        answers, counts = burst(keyed, messages)
        if len(answers) < 30:
            break
    assert all(a["type"] == "result" for a in answers)
    assert len(answers) < 30 and answers[-1]["seq"] == 29
    assert counts["received"] == 30 and counts["analysed"] == len(answers)
    assert sum(a["skipped"] for a in answers) == counts["dropped"] == 30 - len(answers)
    seqs = [a["seq"] for a in answers]
    gaps = [b - a - 1 for a, b in itertools.pairwise(seqs)]
    assert seqs == sorted(seqs) and gaps == [a["skipped"] for a in answers[1:]]


# --- nothing leaks --------------------------------------------------------------------------------------------


def abrupt_close(ws: ClientConnection) -> None:
    """Drop the TCP connection with no close frame (a client that crashed or lost its network)."""
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()


def test_connect_disconnect_soak_leaves_no_session_task_or_thread_behind(face_photo):
    frame = frame_message(moving_face(face_photo, 1)[0])
    with InProcessService() as service:

        def cycle(i: int) -> None:
            with session(service.url) as ws:
                if i % 4:
                    start(ws)
                if i % 2:
                    ws.send(frame)  # gone while its frame is being analysed
                if i % 3 == 0:
                    abrupt_close(ws)

        for i in range(12):  # warm: the thread pools reach their working size
            cycle(i)
        time.sleep(1.0)
        threads, tasks = threading.active_count(), service.tasks()
        for i in range(100):
            cycle(i)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            active = metric_value(service.url, "emotion_stream_sessions_active")
            if active == 0 and service.tasks() <= tasks and threading.active_count() <= threads:
                break
            time.sleep(0.2)
        assert metric_value(service.url, "emotion_stream_sessions_active") == 0
        assert service.tasks() <= tasks and threading.active_count() <= threads
        lost = [metric_value(service.url, f'emotion_stream_sessions_total{{close="{c}"}}') for c in (1005, 1006)]
        assert sum(lost) > 0  # the connections dropped without a close frame were seen as such
        with session(service.url) as ws:  # the model still answers
            start(ws)
            ws.send(frame)
            assert len(result(ws)["faces"]) == 1
