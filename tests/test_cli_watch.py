"""``emotion watch SOURCE``: the frame source's pure parts (what SOURCE is, sampling to ``--fps``), the live views,
the missing-OpenCV message, a clip's frames and capture times as the fake ``WS /stream`` receives them, and end to
end: ``emotion watch clip.mp4 --summary out.json`` against the real service writes a summary with the face's
track."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.synth import Appearance, write_clip
from emotion_client import cli
from emotion_client.cli_render import render_stream_line, render_stream_live, render_stream_summary
from emotion_client.stream_messages import StreamResult
from emotion_client.watch import INSTALL_HINT, RateSampler, source_kind
from tests.live import clean_env, serve
from tests.test_client_stream import FakeService, face, fake_stream, summary

KEY = "watch-key-1"
FAST = "fer_emotion_cnn"


def result(seq: int, skipped: int = 0, faces: list[dict] | None = None) -> dict:
    return {"type": "result", "seq": seq, "t": seq / 10, "skipped": skipped, "width": 640, "height": 480,
            "faces": [face()] if faces is None else faces, "server_ms": 9.14}  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory, face_photo) -> Path:
    """2 s at 10 fps of a real face drifting right, as an mp4 written by OpenCV."""
    path = tmp_path_factory.mktemp("watch") / "clip.mp4"
    return write_clip(path, [Appearance(face_photo, 0, 2.0, (20, 40), (15, 0))], 2.0, fps=10, size=(480, 360))


def test_source_kind_tells_cameras_urls_and_files(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert source_kind("0") == "camera" and source_kind("rtsp://cam/1") == "url"
    assert source_kind(str(tmp_path / "a.mp4")) == "file"
    with pytest.raises(FileNotFoundError, match="camera index, a video file or a URL"):
        source_kind(str(tmp_path / "missing.mp4"))


def test_rate_sampler_keeps_a_regular_grid():
    keep = RateSampler(10.0)
    assert [i for i in range(30) if keep(i / 30)] == list(range(0, 30, 3))
    keep = RateSampler(2.0)
    assert [t for t in (0.0, 0.1, 0.5, 0.6, 3.0, 3.2, 3.5) if keep(t)] == [0.0, 0.5, 3.0, 3.5]  # a gap restarts
    assert all(RateSampler(None)(t) for t in (0.0, 0.0, 0.01))
    with pytest.raises(ValueError, match="--fps"):
        RateSampler(0)


def test_live_views_name_the_track_label_and_figures():
    live = render_stream_live(result(12, skipped=2), dropped=7)
    assert "frame 12" in live and "server 9.1 ms" in live and "skipped 2 (dropped so far 7)" in live
    assert live.splitlines()[1].split()[:4] == ["TRACK", "DOMINANT", "P", "VALENCE"]
    assert live.splitlines()[2].split()[:5] == ["1", "happy", "0.80", "+0.60", "+0.20"]
    assert "no face found" in render_stream_live(result(1, faces=[]), 0)
    assert render_stream_line(result(3)) == "t 0.30 s  frame 3  skipped 0  9.1 ms  track 1 happy 0.80 v +0.60 a +0.20"
    text = render_stream_summary(summary(True, 5))
    assert text.startswith("session: 5 frames received, 5 analysed, 0 dropped, 0 unreadable; 1 face track(s)")
    assert "whole session: happy 0.80" in text


def test_a_terminal_gets_the_table_redrawn_in_place(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    view = cli.LiveView(as_json=False)
    view.show(StreamResult.model_validate(result(0)))
    view.show(StreamResult.model_validate(result(1, skipped=3)))
    first, second = out.getvalue().split("\x1b[3F\x1b[J")  # up 3 lines (the first table), cleared
    assert "frame 0" in first and "frame 1" in second and "dropped so far 3" in second


def test_without_opencv_watch_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    assert cli.main(["watch", "0", "--url", "http://127.0.0.1:9"]) == 1
    assert INSTALL_HINT in capsys.readouterr().err and 'pip install "emotion-client[watch]"' in INSTALL_HINT


def test_a_missing_file_fails_with_the_reason(capsys, tmp_path):
    assert cli.main(["watch", str(tmp_path / "none.mp4"), "--url", "http://127.0.0.1:9"]) == 1
    assert "no such video file" in capsys.readouterr().err


def test_a_clip_is_sent_frame_by_frame_with_its_own_clock(clip, tmp_path, capsys):
    """--fast: each frame once the previous is answered; --fps 5 keeps every other frame of the 10 fps clip; the
    summary goes to --summary and stdout; plain lines where stdout is not a terminal."""
    service = FakeService()
    out = tmp_path / "out.json"
    with fake_stream(service) as url:
        args = ["watch", str(clip), "--fast", "--fps", "5", "--model", "m", "--summary", str(out), "--url", url]
        assert cli.main(args) == 0
    assert service.texts[0] == {"type": "options", "model": "m"} and service.texts[-1] == {"type": "close"}
    assert [t for _, _, t in service.frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8])
    assert all(image.startswith(b"\xff\xd8\xff") for _, image, _ in service.frames)
    assert json.loads(out.read_text()) == summary(True, 10)
    stdout = capsys.readouterr().out
    assert stdout.count("track 1 happy") == 10 and "session: 10 frames received" in stdout


def test_json_lines_and_duration(clip, capsys):
    with fake_stream(FakeService()) as url:
        assert cli.main(["watch", str(clip), "--fast", "--duration", "0.5", "--json", "--url", url]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["type"] for m in lines] == ["result"] * 5 + ["summary"]
    assert lines[-1]["final"] and lines[0]["faces"][0]["track_id"] == 1


def test_emotion_watch_a_clip_writes_a_summary_with_its_track(clip, tmp_path):
    """The real service and the real command (``python -m emotion_client``), at the clip's own pace."""
    out = tmp_path / "out.json"
    with serve(api_key=KEY) as url:
        args = ["watch", str(clip), "--model", FAST, "--summary", str(out), "--url", url, "--api-key", KEY]
        run = subprocess.run([sys.executable, "-m", "emotion_client", *args], capture_output=True, text=True,
                             timeout=120, env=clean_env())  # fmt: skip
    assert run.returncode == 0, run.stderr
    written = json.loads(out.read_text())
    assert written["final"] and written["frames"]["received"] == 20
    assert written["tracks"] and written["tracks"][0]["samples"] >= 1
    assert written["tracks"][0]["summary"]["dominant"] in written["tracks"][0]["summary"]["emotions"]
    assert "session: 20 frames received" in run.stdout and "track 1 " in run.stdout


def test_ctrl_c_closes_the_session_and_still_writes_the_summary(clip, tmp_path):
    """SIGINT mid-clip (the way a camera's session ends): ``close`` is sent, the final summary written, status 0."""
    service, out = FakeService(), tmp_path / "out.json"
    with fake_stream(service) as url:
        args = [sys.executable, "-m", "emotion_client", "watch", str(clip), "--summary", str(out), "--url", url]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        first = proc.stdout.readline()  # a result came back: the session runs
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert first.startswith("t 0.00 s  frame 0") and service.texts[-1] == {"type": "close"}
    assert 1 <= len(service.frames) < 20 and json.loads(out.read_text())["final"]
    assert "session: " in stdout
