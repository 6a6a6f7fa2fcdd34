"""The Python client (``emotion_client``) and the ``emotion`` CLI against a live server (``python -m service`` on
a free port, real HTTP): typed results equal to the API's answers, the CLI's JSON exactly the API's, tables, exit
statuses, API keys, and retries honouring a real 503 + ``Retry-After`` from load shedding."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from benchmarks.synth import Appearance, write_clip
from emotion_client import (
    AsyncEmotionClient,
    EmotionAPIError,
    EmotionClient,
    EmotionConnectionError,
    FacePredictionResponse,
    ImagePredictionResponse,
    JobFailed,
    ModelList,
)
from emotion_client.calls import RetryPolicy, retry_after
from tests.conftest import DEFAULT_MODEL, DEFAULT_VERSION, ROOT, metric, store_versions
from tests.live import clean_env, free_port, serve

KEY = "test-key-123"
# the fast model's oldest version in the store: a version asked for by name
FAST_OLDEST = store_versions("fer_emotion_cnn")[-1]
EMOTION = Path(sys.executable).with_name("emotion")  # the console script pyproject.toml declares


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """One request in flight and one upload arriving at most, so that a second one gets a real 503 + Retry-After;
    an API key required."""
    with serve(api_key=KEY, limits__max_in_flight="1", limits__max_receiving="1") as url:
        yield url


@pytest.fixture
def client(server) -> Iterator[EmotionClient]:
    with EmotionClient(server, KEY, retries=0) as c:
        yield c


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    assert EMOTION.is_file(), f"{EMOTION} missing: pip install -e . installs the console script"
    return subprocess.run([str(EMOTION), *args], capture_output=True, text=True, timeout=180, env=clean_env(**env))


def api(server: str, route: str, data: bytes, name: str = "f.jpg", ctype: str = "image/jpeg", **params) -> dict:
    """The API's own answer to a multipart upload (what the CLI's output must equal)."""
    files = {"file": (name, data, ctype)}
    return httpx.post(f"{server}{route}", files=files, params=params, headers={"X-API-Key": KEY}, timeout=120).json()


@pytest.fixture(scope="module")
def photos(server, photo_paths) -> list[Path]:
    """Two real photos in which the service finds at least one face."""
    found = [p for p in photo_paths[:40] if api(server, "/predict/image", p.read_bytes())["faces"]][:2]
    assert len(found) == 2
    return found


@pytest.fixture(scope="module")
def crop(fer_root) -> Path:
    return sorted((fer_root / "val" / "happy").iterdir())[0]


# --- the CLI -----------------------------------------------------------------------------------------------------


def test_pyproject_declares_the_console_script():
    assert 'emotion = "emotion_client.cli:main"' in (ROOT / "pyproject.toml").read_text()
    assert 'emotion = "emotion_client.cli:main"' in (ROOT / "clients" / "python" / "pyproject.toml").read_text()


def test_predict_json_prints_exactly_what_predict_image_answers(server, photos):
    result = cli("predict", str(photos[0]), "--json", "--url", server, "--api-key", KEY)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == api(server, "/predict/image", photos[0].read_bytes())
    assert answer["faces"]  # a real answer, not an empty one


def test_several_files_give_a_json_list_in_order_with_progress_on_stderr(server, photos, crop):
    # one at a time: batched together, a face's answer may differ in the 3rd decimal from the one it gets alone
    result = cli(
        "predict", str(photos[1]), str(photos[0]), "--json", "--concurrency", "1", "--url", server, EMOTION_API_KEY=KEY
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [api(server, "/predict/image", p.read_bytes()) for p in photos[::-1]]
    assert "2/2" in result.stderr  # the tqdm bar
    faces = cli("face", str(crop), str(crop), "--json", "--concurrency", "1", "--url", server, "--api-key", KEY)
    assert json.loads(faces.stdout) == [api(server, "/predict/face", crop.read_bytes())] * 2


def test_a_folder_is_its_images_recursively_and_always_a_json_list(server, photos, tmp_path):
    """A folder of photos is the common input; the CLI sent the folder itself and failed ("Is a directory")."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.JPG").write_bytes(photos[1].read_bytes())
    (tmp_path / "sub" / "a.jpg").write_bytes(photos[0].read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    result = cli("predict", str(tmp_path), "--json", "--concurrency", "1", "--url", server, "--api-key", KEY)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [api(server, "/predict/image", p.read_bytes()) for p in photos[1::-1]]
    (tmp_path / "sub" / "a.jpg").unlink()
    (tmp_path / "b.JPG").unlink()
    alone = cli("face", str(tmp_path), "--json", "--url", server, "--api-key", KEY)
    assert alone.returncode == 1 and "no images" in alone.stderr and "no image files to send" in alone.stderr
    (tmp_path / "c.png").write_bytes(cv2.imencode(".png", cv2.imread(str(photos[0])))[1].tobytes())
    one = cli("face", str(tmp_path), "--json", "--url", server, "--api-key", KEY)
    assert one.returncode == 0 and isinstance(json.loads(one.stdout), list), one.stderr


def test_files_go_several_at_once_and_answer_in_their_order(server, photo_paths, crop, tmp_path):
    files = [str(p) for p in photo_paths[:6]] + ["missing.jpg", str(crop)]
    result = cli("predict", *files, "--json", "--concurrency", "3", "--url", server, "--api-key", KEY)
    assert result.returncode == 1 and "missing.jpg" in result.stderr  # one file failed; the others answered
    answers = json.loads(result.stdout)
    expected = [api(server, "/predict/image", Path(f).read_bytes()) for f in files if f != "missing.jpg"]
    assert "detail" in answers.pop(6) and len(answers) == len(expected)
    for got, alone in zip(answers, expected, strict=True):  # batched together, int8 may differ in the 3rd decimal
        assert [(f["box"], f["dominant"]) for f in got["faces"]] == [(f["box"], f["dominant"]) for f in alone["faces"]]
        for f, g in zip(got["faces"], alone["faces"], strict=True):
            assert f["emotions"] == pytest.approx(g["emotions"], abs=5e-3)
    refused = cli("face", str(crop), "--concurrency", "0", "--url", server, "--api-key", KEY)
    assert refused.returncode == 1 and "--concurrency 0" in refused.stderr


def test_table_output_names_each_face_and_its_label(server, photos, crop):
    result = cli("predict", str(photos[0]), "--url", server, "--api-key", KEY)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["FILE", "SIZE", "FACE", "BOX", "DOMINANT"]
    faces = api(server, "/predict/image", photos[0].read_bytes())["faces"]
    assert len(rows) == len(faces)
    assert all(row.startswith(str(photos[0])) and f["dominant"] in row for row, f in zip(rows, faces, strict=True))
    face = cli("face", str(crop), "--url", server, "--api-key", KEY)
    assert face.stdout.splitlines()[1].split()[:2] == [str(crop), "happy"]


def test_a_failing_file_gives_exit_status_1_its_error_json_and_a_line_on_stderr(server, photos, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = cli("predict", str(photos[0]), str(corrupt), str(tmp_path / "missing.jpg"), "--json", "--url", server,
                 "--api-key", KEY)  # fmt: skip
    assert result.returncode == 1
    ok, refused, missing = json.loads(result.stdout)
    assert ok["faces"] and refused == api(server, "/predict/image", corrupt.read_bytes())
    assert set(refused) == {"detail"} and "missing.jpg" in missing["detail"]
    assert f"{corrupt}: 422:" in result.stderr and "missing.jpg" in result.stderr
    table = cli("predict", str(photos[0]), str(corrupt), "--url", server, "--api-key", KEY)
    assert table.returncode == 1 and "error: the image header is corrupt" in table.stdout.splitlines()[-1]


def test_unreachable_server_and_wrong_key_fail_with_the_reason_on_stderr(server, photos):
    refused = cli("health", "--url", f"http://127.0.0.1:{free_port()}", "--retries", "0")
    assert refused.returncode == 1 and "ConnectError" in refused.stderr
    wrong = cli("predict", str(photos[0]), "--url", server, "--api-key", "wrong")
    assert wrong.returncode == 1 and "401: missing or invalid API key" in wrong.stderr
    assert wrong.stdout.splitlines()[1].endswith("error: missing or invalid API key (header X-API-Key)")  # its row


def test_models_and_health_commands(server):
    models = cli("models", "--json", "--url", server, "--api-key", KEY)
    assert json.loads(models.stdout) == httpx.get(f"{server}/models", headers={"X-API-Key": KEY}).json()
    table = cli("models", "--url", server, "--api-key", KEY).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "VERSION", "DEFAULT"]
    assert table[1].split()[:3] == [DEFAULT_MODEL, DEFAULT_VERSION, "*"]
    health = cli("health", "--url", server)
    assert health.returncode == 0 and health.stdout.startswith(f"ok  {DEFAULT_MODEL} {DEFAULT_VERSION}")
    assert json.loads(cli("health", "--live", "--json", "--url", server).stdout) == {"status": "ok", "model": None,
                                                                                     "detail": None}  # fmt: skip


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photos) -> Path:
    image = cv2.imread(str(photos[0]))
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    return write_clip(path, [Appearance(image, 0, 2.0, (10, 10), (20, 0))], 2.0, fps=10, size=(480, 360))


def without_timings(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "timings"}  # seconds spent: differ from run to run


def test_video_command_prints_the_predict_video_answer(server, clip):
    result = cli("video", str(clip), "--json", "--sample-fps", "4", "--url", server, "--api-key", KEY)
    assert result.returncode == 0, result.stderr
    expected = api(server, "/predict/video", clip.read_bytes(), "walk.mp4", "video/mp4", sample_fps=4)
    assert without_timings(json.loads(result.stdout)) == without_timings(expected)
    table = cli("video", str(clip), "--sample-fps", "4", "--url", server, "--api-key", KEY).stdout
    assert f"{clip}: 2.0 s, 480x360, 8 frames analysed at 4 fps, 1 face track(s)" in table


# --- the client ----------------------------------------------------------------------------------------------------


def test_typed_results_equal_the_api_answers(client, server, photos, crop):
    face = client.predict_face(crop)
    assert isinstance(face, FacePredictionResponse) and face.dominant == "happy"
    assert face.model_dump(mode="json") == api(server, "/predict/face", crop.read_bytes())
    assert client.predict_face(crop.read_bytes()) == face
    image = client.predict_image(photos[0], max_faces=1)
    assert isinstance(image, ImagePredictionResponse) and len(image.faces) == 1
    assert image.model_dump(mode="json") == api(server, "/predict/image", photos[0].read_bytes(), max_faces=1)
    models = client.models()
    assert isinstance(models, ModelList) and models.default == DEFAULT_MODEL
    assert client.model("fer_emotion_cnn", FAST_OLDEST).version == FAST_OLDEST
    assert client.health("live").status == "ok" and client.health("ready").model.version == DEFAULT_VERSION


def test_a_numpy_image_is_sent_losslessly(client, crop):
    pixels = cv2.imread(str(crop))  # BGR, as OpenCV reads
    from_array = client.predict_face(pixels)
    assert from_array.emotions == pytest.approx(client.predict_face(crop).emotions, abs=1e-6)
    gray = client.predict_face(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY))
    assert gray.emotions == pytest.approx(from_array.emotions, abs=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        client.predict_face(pixels.astype(np.float32))


def test_errors_carry_status_and_detail(client, server):
    with pytest.raises(EmotionAPIError) as info:
        client.predict_face(b"GIF89a not served")
    assert info.value.status == 415 and "unsupported image format" in info.value.detail
    with pytest.raises(EmotionAPIError) as info:
        client.model("no-such-model")
    assert info.value.status == 404 and info.value.detail == "unknown model 'no-such-model'"
    with EmotionClient(server, "wrong") as wrong, pytest.raises(EmotionAPIError) as info:
        wrong.models()
    assert info.value.status == 401


@contextmanager
def one_request_in_flight(server: str) -> Iterator[socket.socket]:
    """Holds the server's only request slot: a POST whose body never finishes arriving (closing the socket
    frees it)."""
    host, port = server.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    conn.sendall(
        f"POST /predict/face HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\nContent-Type: image/jpeg\r\n"
        "Content-Length: 100000\r\n\r\n\xff\xd8".encode("latin-1")
    )
    try:
        deadline = time.monotonic() + 10
        while metric(httpx.get(f"{server}/metrics").text, "emotion_requests_receiving") < 1:
            assert time.monotonic() < deadline, "the held request never started"
            time.sleep(0.02)
        yield conn
    finally:
        conn.close()


def rejected(server: str) -> float:
    return metric(httpx.get(f"{server}/metrics").text, "emotion_requests_rejected_total")


def test_a_real_503_is_retried_after_its_retry_after(server, crop):
    before = rejected(server)
    with one_request_in_flight(server) as held, EmotionClient(server, KEY, retries=3, backoff=0.01) as client:
        threading.Timer(0.3, held.close).start()  # frees the slot long before the 1 s Retry-After ends
        started = time.monotonic()
        answer = client.predict_face(crop)
        elapsed = time.monotonic() - started
    assert answer.dominant == "happy"
    assert rejected(server) - before == 1  # refused once, then served
    assert 0.95 <= elapsed < 5  # waited the server's Retry-After: 1, not the 0.01 s backoff


def test_without_retries_the_503_is_raised_with_its_retry_after(server, crop):
    with (
        one_request_in_flight(server),
        EmotionClient(server, KEY, retries=0) as client,
        pytest.raises(EmotionAPIError) as info,
    ):
        client.predict_face(crop)
    assert info.value.status == 503 and info.value.retry_after == 1.0
    assert info.value.detail == "server is at capacity; retry shortly"


def test_async_client_retries_concurrent_requests_past_load_shedding(server, crop, clip):
    """Three requests at once against one slot: two are shed with 503 and get through on their retries."""

    async def main():
        async with AsyncEmotionClient(server, KEY, retries=4) as client:
            faces = await asyncio.gather(*(client.predict_face(crop) for _ in range(3)))
            video = await client.predict_video(clip, sample_fps=4)  # multipart streamed from the file
            return faces, video, await client.models(), await client.health()

    before = rejected(server)
    faces, video, models, health = asyncio.run(main())
    assert [f.dominant for f in faces] == ["happy"] * 3 and faces[0] == faces[1] == faces[2]
    assert rejected(server) - before >= 1
    assert video.frames_analyzed == 8 and len(video.tracks) == 1
    assert models.default == DEFAULT_MODEL and health.status == "ok"


def test_connection_failures_are_retried_then_raised():
    with EmotionClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as client:
        started = time.monotonic()
        with pytest.raises(EmotionConnectionError, match="ConnectError"):
            client.health()
    assert time.monotonic() - started < 5


def test_retry_policy_and_retry_after_parsing():
    policy = RetryPolicy(retries=2, backoff=0.5, max_delay=10)
    assert policy.delay(0, retry_after=3) == 3 and policy.delay(0, retry_after=11) is None  # too long: give up
    assert 0.25 <= policy.delay(0) <= 0.5 and 0.5 <= policy.delay(1) <= 1.0 and policy.delay(2) is None
    assert retry_after("2") == 2.0 and retry_after(None) is None and retry_after("soon") is None
    assert 0 <= retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now


# --- video jobs (the /jobs API) ----------------------------------------------------------------------------------


def test_video_job_is_submitted_and_waited_for_with_progress(client, server, clip):
    job = client.submit_video_job(clip, sample_fps=4)
    assert job.status in {"queued", "running", "succeeded"} and job.id
    seen: list[float] = []
    done = client.wait_for_job(job.id, poll_interval=0.05, progress=lambda j: seen.append(j.progress))
    assert done.status == "succeeded" and seen == sorted(seen) and seen[-1] == 1.0
    expected = api(server, "/predict/video", clip.read_bytes(), "walk.mp4", "video/mp4", sample_fps=4)
    assert without_timings(done.result.model_dump(mode="json")) == without_timings(expected)
    page = client.jobs(limit=100, status="succeeded")
    assert job.id in [j.id for j in page.jobs] and all(j.status == "succeeded" for j in page.jobs)
    with pytest.raises(EmotionAPIError) as info:
        client.job("no-such-job")
    assert info.value.status == 404
    assert client.delete_job(job.id).status == "succeeded"  # its result deleted on request
    with pytest.raises(EmotionAPIError) as info:
        client.job(job.id)
    assert info.value.status == 404


def test_cli_video_wait_runs_a_job_with_a_progress_bar(server, clip):
    result = cli("video", str(clip), "--wait", "--json", "--sample-fps", "4", "--url", server, "--api-key", KEY)
    assert result.returncode == 0, result.stderr
    expected = api(server, "/predict/video", clip.read_bytes(), "walk.mp4", "video/mp4", sample_fps=4)
    assert without_timings(json.loads(result.stdout)) == without_timings(expected)
    assert "job " in result.stderr and "100%" in result.stderr


def test_a_cancelled_job_raises_job_failed(client, tmp_path, photos):
    image = cv2.imread(str(photos[0]))
    long_clip = write_clip(tmp_path / "long.mp4", [Appearance(image, 0, 30.0, (10, 10))], 30.0, fps=10, size=(480, 360))
    job = client.submit_video_job(long_clip)
    client.cancel_job(job.id)
    with pytest.raises(JobFailed) as info:
        client.wait_for_job(job.id, poll_interval=0.05, timeout=60)
    assert info.value.job.status == "cancelled"
