"""The Dockerfile's command as a live server over real HTTP; compose and Prometheus config; settings validation."""

from __future__ import annotations

import json
import re
import socket
import sys

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.conftest import ROOT
from tests.live import serve


def dockerfile_cmd() -> list[str]:
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return json.loads(line[4:])


@pytest.fixture(scope="module")
def live_server():
    """The Dockerfile's own command (on a free local port), ready."""
    cmd = dockerfile_cmd()
    assert cmd[:3] == ["python", "-m", "service"]
    with serve([sys.executable, *cmd[1:]]) as url:
        yield url


def test_dockerfile_command_serves_predictions_over_real_http(live_server, happy_face_bytes):
    response = httpx.post(f"{live_server}/predict/face", files={"file": ("f.jpg", happy_face_bytes, "image/jpeg")})
    assert response.status_code == 200 and response.json()["dominant"] == "happy"
    bad = httpx.post(f"{live_server}/predict/face", files={"file": ("f.jpg", b"\xff\xd8\xffjunk", "image/jpeg")})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/json"
    assert "emotion_requests_total" in httpx.get(f"{live_server}/metrics").text


def test_oversized_body_is_refused_before_parsing(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    request = (
        f"POST /predict/image HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n--x\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)  # declares 50 MiB, sends a few bytes: the answer must come without the rest
        reply = _read_response(conn)
    assert reply.startswith("HTTP/1.1 413") and "byte limit" in reply


def _read_response(conn: socket.socket) -> str:
    """Read one HTTP response whole: headers and body may arrive in separate segments."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length and (chunk := conn.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_compose_runs_the_image_and_prometheus_scrapes_it():
    compose = (ROOT / "docker-compose.yml").read_text()
    prometheus = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert "build: ." in compose and "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    assert "metrics_path: /metrics" in prometheus and re.search(r'targets: \["emotion:8000"\]', prometheus)
    assert "/health/ready" in (ROOT / "Dockerfile").read_text()


def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in ci and command in readme


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"store_path": "/does/not/exist"}, "EMOTION_STORE_PATH"),
        ({"default_model": "../x"}, "EMOTION_DEFAULT_MODEL"),
        ({"temp_dir": "/does/not/exist"}, "EMOTION_TEMP_DIR"),
        ({"max_faces": 0}, "max_faces"),
        ({"backend": "tensorflow"}, "backend"),
    ],
)
def test_invalid_settings_fail_at_start_with_a_fix_hint(env, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Settings(_env_file=None, **env)
