"""Hostile and broken uploads against a real uvicorn on real sockets (issue 28): one limit, one answer (413 in the
route family's shape, whether the body is declared or chunked); uploads stalled mid-body cost the service no place
a ready request needs and are cut off within ``body_timeout_s``; readiness says so when the service is saturated;
a client that hangs up mid-upload is a 499 in the metrics, one log line, no traceback, no 5xx."""

from __future__ import annotations

import json
import time

import cv2
import pytest

from benchmarks.synth import Appearance, write_clip
from service.config import Settings
from service.main import create_app
from tests.conftest import DEFAULT_MODEL, jpeg
from tests.hostile_support import (
    FORM,
    chunks,
    closed_by_server,
    live_service,
    metric_sum,
    multipart,
    post,
    start_upload,
)
from tests.jobs_support import wait_until

UPLOAD, VIDEO, JOB = 200_000, 300_000, 300_000
SLACK = 64 * 1024  # what a multipart body may carry around its file
BODY_TIMEOUT_S = 3.0
LIMITS = {
    "EMOTION_LIMITS__MAX_UPLOAD_BYTES": str(UPLOAD),
    "EMOTION_VIDEO__MAX_BYTES": str(VIDEO),
    "EMOTION_QUEUE__MAX_BYTES": str(JOB),
    "EMOTION_LIMITS__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
}
DOCUMENT = create_app(Settings(_env_file=None)).openapi()
BODY_ROUTES = sorted(
    path.replace("{name}", DEFAULT_MODEL)
    for path, operations in DOCUMENT["paths"].items()
    if "requestBody" in operations.get("post", {}) and "{version}" not in path
)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    log = folder / "service.log"
    with live_service(log, TMPDIR=str(folder), **LIMITS) as port:
        yield port, log


@pytest.fixture(scope="module")
def bodies(tmp_path_factory, face_photo) -> dict[str, tuple[str, bytes, bytes, int]]:
    """Per body route: content type, a body under its limit, one over it, and the limit its 413 names."""
    folder = tmp_path_factory.mktemp("bodies")
    face = cv2.resize(face_photo, (200, 200))
    clip = write_clip(folder / "c.mp4", [Appearance(face, 0, 2.0, (40, 20))], 2.0, size=(320, 240)).read_bytes()
    photo = multipart(jpeg(face))
    image_over = multipart(b"\xff\xd8\xff\xe0" + bytes(UPLOAD + SLACK))
    video_over = multipart(clip[:16] + bytes(VIDEO + SLACK), "a.mp4")
    v2 = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["eA=="]}]}
    v2_over = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1], "data": [0.0] * 60_000}]}
    found = {
        **{r: (FORM, photo, image_over, UPLOAD) for r in ("/predict/image", "/predict/face", "/predict/attributes")},
        **{r: (FORM, multipart(clip, "a.mp4"), video_over, VIDEO) for r in ("/predict/video", "/jobs/video")},
        "/predict/features": ("application/json", b'{"features": [[0.0]]}', b"[" + b"0.0," * 60_000 + b"0]", UPLOAD),
        f"/v2/models/{DEFAULT_MODEL}/infer": (
            "application/json",
            json.dumps(v2).encode(),
            json.dumps(v2_over).encode(),
            UPLOAD,
        ),
    }
    assert set(found) == set(BODY_ROUTES), "a body route without its table row"
    return found


def family_key(route: str) -> str:
    return "error" if route.startswith("/v2") else "detail"


@pytest.mark.parametrize("size", ["under", "over"])
@pytest.mark.parametrize("sent", ["declared", "chunked"])
@pytest.mark.parametrize("route", BODY_ROUTES)
def test_one_limit_one_answer_on_every_body_route(service, bodies, route, sent, size):
    port, _ = service
    content_type, under, over, limit = bodies[route]
    body = under if size == "under" else over
    status, answer = post(port, route, body if sent == "declared" else chunks(body), content_type)
    key = family_key(route)
    if size == "over":
        assert (status, answer) == (413, {key: f"request body is larger than the {limit} byte limit"})
    else:
        assert status < 500 and status != 413, answer
        assert status < 400 or set(answer) == {key}, answer


def test_stalled_uploads_lock_nobody_out_and_are_cut_off_in_time(service, face_photo):
    """Issue 28's 80 sockets, each stalled mid-body: a normal request is served at once, readiness and liveness
    answer, and every stalled connection is closed within the body timeout."""
    port, _ = service
    photo = multipart(jpeg(cv2.resize(face_photo, (320, 320))))
    before = metric_sum(port, "emotion_requests_total", status="408")
    stalled = [start_upload(port, "/predict/image", 20_000, multipart(bytes(20_000))[:9000]) for _ in range(80)]
    stalled_at = time.monotonic()
    wait_until(lambda: metric_sum(port, "emotion_requests_receiving") == 80, 5, "the uploads never arrived")
    started = time.monotonic()
    status, answer = post(port, "/predict/image", photo, FORM)
    assert status == 200 and answer["faces"], answer
    assert time.monotonic() - started < 15
    assert metric_sum(port, "emotion_requests_in_flight") == 0  # the stalled ones hold no in-flight place
    wait_until(lambda: all(closed_by_server(s) for s in stalled), BODY_TIMEOUT_S + 5, "stalled uploads left open")
    assert time.monotonic() - stalled_at < BODY_TIMEOUT_S + 5
    assert metric_sum(port, "emotion_requests_total", status="408") - before == 80
    assert metric_sum(port, "emotion_requests_receiving") == 0
    for sock in stalled:
        sock.close()


@pytest.mark.parametrize(
    ("route", "content_type"), [("/predict/image", FORM), ("/v2/models/x/infer", "application/json")]
)
def test_a_stalled_body_gets_408_in_the_routes_shape_and_the_connection_closes(service, route, content_type):
    port, _ = service
    sock = start_upload(port, route.replace("x", DEFAULT_MODEL), 5000, b"--" if content_type == FORM else b"{")
    sock.settimeout(BODY_TIMEOUT_S + 5)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), head
    message = json.loads(body)[family_key(route)]
    assert f"each part must come within {BODY_TIMEOUT_S:g} s" in message and "5000 bytes" in message
    sock.close()


def test_aborted_uploads_are_counted_499_logged_once_and_never_a_server_error(service):
    port, log = service
    errors, aborted = (
        metric_sum(port, "emotion_requests_total", status="500"),
        metric_sum(port, "emotion_requests_total", status="499"),
    )
    lines = len(log.read_text().splitlines())
    for route, content_type in [
        ("/predict/image", "image/jpeg"),
        ("/predict/face", FORM),
        (f"/v2/models/{DEFAULT_MODEL}/infer", "application/json"),
    ]:
        sock = start_upload(port, route, 100_000, multipart(bytes(100_000))[:5000], content_type)
        time.sleep(0.3)
        sock.close()
    wait_until(lambda: metric_sum(port, "emotion_requests_total", status="499") - aborted == 3, 10, "aborts uncounted")
    time.sleep(0.5)
    assert metric_sum(port, "emotion_requests_total", status="500") == errors
    new = log.read_text().splitlines()[lines:]
    assert not any("Traceback" in line or "ERROR" in line for line in new), new
    hung_up = [line for line in new if "closed the connection after 5000 of 100000 bytes" in line]
    assert len(hung_up) == 3 and all(" INFO " in line for line in hung_up), new


@pytest.fixture(scope="module")
def small_service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    env = {**LIMITS, "EMOTION_LIMITS__MAX_RECEIVING": "5"}
    with live_service(folder / "service.log", TMPDIR=str(folder), **env) as port:
        yield port


def test_readiness_tells_the_truth_when_uploads_fill_the_service(small_service):
    """Every upload place taken: new uploads are shed (503 + Retry-After), readiness says ``saturated`` (503) so an
    orchestrator sends traffic elsewhere, liveness stays 200; once the stalled bodies are cut off, ready again."""
    import httpx

    port, url = small_service, f"http://127.0.0.1:{small_service}"
    stalled = [start_upload(port, "/predict/image", 20_000, b"--hostileb\r\n") for _ in range(5)]
    wait_until(lambda: metric_sum(port, "emotion_requests_receiving") == 5, 5, "the uploads never arrived")
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "saturated", ready.text
    assert "EMOTION_LIMITS__MAX_RECEIVING" in ready.json()["detail"] and ready.headers["retry-after"] == "1"
    assert httpx.get(f"{url}/health/live").status_code == 200
    shed = httpx.post(f"{url}/predict/image", content=b"\xff\xd8", headers={"Content-Type": "image/jpeg"})
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert httpx.get(f"{url}/models").status_code == 200  # a request without a body still has its place
    wait_until(lambda: httpx.get(f"{url}/health/ready").status_code == 200, BODY_TIMEOUT_S + 5, "never ready again")
    for sock in stalled:
        sock.close()


@pytest.fixture(scope="module")
def one_slot_service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one_slot")
    with live_service(folder / "service.log", TMPDIR=str(folder), EMOTION_LIMITS__MAX_IN_FLIGHT="1") as port:
        yield port


def test_in_flight_stays_a_true_bound_when_bodies_arrive_together(one_slot_service, face_photo):
    """Uploads arriving at once all fit the receiving places, but only ``max_in_flight`` of them may run: the rest
    are shed with 503 + Retry-After once their bodies are in, in the route's shape, and nothing else goes wrong."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    url, photo = f"http://127.0.0.1:{one_slot_service}", jpeg(face_photo)

    def one(_) -> httpx.Response:
        return httpx.post(f"{url}/predict/image", content=photo, headers={"Content-Type": "image/jpeg"}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 1, statuses
    shed = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "1" and "capacity" in a.json()["detail"] for a in shed)
    assert metric_sum(one_slot_service, "emotion_requests_in_flight") == 0


def test_an_upload_whose_body_is_in_is_shed_while_the_in_flight_places_are_full():
    """ASGI-level and deterministic: request A holds the only in-flight place; B's body was still arriving when A
    started (so B was not shed at the door), and when it is in, B is answered 503 instead of running beside A."""
    import asyncio

    from service.api.body import BodyGuardMiddleware, BodyRules
    from service.api.middleware import MetricsMiddleware
    from service.metrics import Metrics

    release, ran = asyncio.Event(), []

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        ran.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    metrics = Metrics()
    stack = MetricsMiddleware(BodyGuardMiddleware(app, BodyRules(10_000, 5.0)), metrics, max_in_flight=1)

    def scope(path: str) -> dict:
        headers = [(b"content-length", b"4"), (b"content-type", b"image/jpeg")]
        return {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}

    async def main():
        b_body = asyncio.Event()
        sent: dict[str, list] = {"/a": [], "/b": []}

        async def receive_a():
            return {"type": "http.request", "body": b"abcd", "more_body": False}

        async def receive_b():
            await b_body.wait()
            return {"type": "http.request", "body": b"abcd", "more_body": False}

        async def sender(path):
            async def send(message):
                sent[path].append(message)

            return send

        b = asyncio.create_task(stack(scope("/b"), receive_b, await sender("/b")))  # arriving: a receiving place
        await asyncio.sleep(0.01)
        a = asyncio.create_task(stack(scope("/a"), receive_a, await sender("/a")))
        while ran != ["/a"]:
            await asyncio.sleep(0.005)
        b_body.set()  # B's body is in while A holds the only in-flight place
        await asyncio.wait_for(b, 2)
        release.set()
        await asyncio.wait_for(a, 2)
        return sent

    sent = asyncio.run(main())
    assert ran == ["/a"]  # B never reached the app
    start = next(m for m in sent["/b"] if m["type"] == "http.response.start")
    assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
    assert next(m for m in sent["/a"] if m["type"] == "http.response.start")["status"] == 200
    assert metrics.active == 0 and metrics.receiving == 0
