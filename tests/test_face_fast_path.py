"""The thin paths of ``POST /predict/face`` and ``POST /predict/image`` (issue 32): which uploads they take (the plain
one-file form and the raw body, with at most ``model``/``version`` in the query, nothing else), that they answer byte
for byte what FastAPI's full path answers, errors included; that a lone photo runs in the model's thread in one hop;
and that the batcher's jobs that bring their own thread work (decode, preprocess, judging) each get their own result
or error."""

from __future__ import annotations

import asyncio
import functools
import threading

import cv2
import httpx
import numpy as np
import pytest

from service.api.uploads import plain_boundary, plain_file_part
from service.batching import MicroBatcher
from service.imaging import header_size, image_size
from service.pipelines.face import decodes_quickly
from tests.conftest import DEFAULT_MODEL
from tests.live import serve

B = b"x-7f3a91"
DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="a.jpg"'
KEY = "fast-path-key"


def form(content: bytes, *headers: bytes, tail: bytes = b"\r\n", boundary: bytes = B) -> bytes:
    head = b"\r\n".join(headers or (DISPOSITION, b"Content-Type: image/jpeg"))
    return b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n--" + boundary + b"--" + tail


def test_the_plain_one_file_form_is_read_as_its_file():
    assert plain_boundary(b"multipart/form-data; boundary=" + B) == B
    assert plain_boundary(b'multipart/form-data; boundary="' + B + b'"') == B
    assert plain_file_part(form(b"\xff\xd8 image \r\n bytes"), B) == b"\xff\xd8 image \r\n bytes"
    assert plain_file_part(form(b"abc", DISPOSITION, tail=b""), B) == b"abc"


def test_the_form_httpx_sends_is_plain():
    files = {"file": ("face.jpg", b"\xff\xd8jpeg", "image/jpeg")}
    request = httpx.Request("POST", "http://t/predict/face", files=files)
    body = request.read()
    boundary = plain_boundary(request.headers["content-type"].encode())
    assert boundary is not None and plain_file_part(body, boundary) == b"\xff\xd8jpeg"


@pytest.mark.parametrize(
    "body",
    [
        form(b""),  # an empty file
        form(b"abc", b'Content-Disposition: form-data; name="file"'),  # a field, not a file
        form(b"abc", b'Content-Disposition: form-data; name="image"; filename="a.jpg"'),  # another field
        form(b"abc", DISPOSITION, b"Content-Transfer-Encoding: base64"),  # an encoded part
        form(b"abc\r\n--" + B + b'\r\nContent-Disposition: form-data; name="x"\r\n\r\nv'),  # two parts
        form(b"abc")[:-8],  # cut off before the closing delimiter
        b"preamble\r\n" + form(b"abc"),
        form(b"abc", tail=b"\r\nepilogue"),
        form(b"abc", boundary=b"other"),
    ],
)
def test_any_other_form_is_left_to_the_full_parser(body):
    assert plain_file_part(body, B) is None


def test_unusual_content_types_are_left_to_the_full_parser():
    for header in (b"multipart/form-data", b'multipart/form-data; boundary="a b"', b"multipart/mixed; boundary=a"):
        assert plain_boundary(header) is None


@pytest.mark.parametrize(("ext", "params"), [(".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".png", [])])
def test_the_declared_size_is_read_as_pil_reads_it(ext, params):
    image = np.random.default_rng(len(params)).integers(0, 256, (61, 47, 3), dtype=np.uint8)
    data = cv2.imencode(ext, image, params)[1].tobytes()
    assert header_size(data) == image_size(data) == (47, 61)


def test_headers_it_cannot_read_are_left_to_pil():
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for data in (b"", b"\xff\xd8", b"\xff\xd8\xff truncated", jpeg[:10], b"GIF89a" + jpeg, b"\x89PNG\r\n\x1a\n"):
        assert header_size(data) is None


def test_jobs_bring_their_own_thread_work_and_get_their_own_errors():
    threads: set[str] = set()

    def rows(value: float):
        def make() -> np.ndarray:
            threads.add(threading.current_thread().name)
            if value < 0:
                raise ValueError("unreadable")
            return np.full((2, 1), value, np.float32)

        return make

    def finish(outputs: dict[str, np.ndarray]) -> float:
        threads.add(threading.current_thread().name)
        return float(outputs["y"].sum())

    async def scenario():
        batcher = MicroBatcher(lambda b: {"y": b * 10}, max_batch=64, max_wait_ms=50, pending=lambda: 3)
        jobs = [batcher.submit_work(rows(v), finish, 2) for v in (1.0, -1.0, 2.0)]
        out = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.close()
        return out

    first, failed, third = asyncio.run(scenario())
    assert (first, third) == (20.0, 40.0) and isinstance(failed, ValueError)
    assert threads and all(name.startswith("inference") for name in threads)


@pytest.fixture(scope="module")
def service():
    with serve(api_key=KEY) as url:
        yield url


def predict(
    url: str, crop: bytes, query: str = "", raw: bool = False, key: str | None = KEY, route: str = "face"
) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    if raw:
        headers["Content-Type"] = "image/jpeg"
        return httpx.post(f"{url}/predict/{route}{query}", content=crop, headers=headers, timeout=60)
    return httpx.post(f"{url}/predict/{route}{query}", files={"file": ("a.jpg", crop)}, headers=headers, timeout=60)


def test_thin_and_full_paths_answer_the_same_bytes(service, happy_face_bytes):
    query = f"?model={DEFAULT_MODEL}"
    thin = [predict(service, happy_face_bytes, query, raw) for raw in (False, True)]
    # a repeated query key is left to FastAPI's validation: the full path, with the same model
    full = [predict(service, happy_face_bytes, f"{query}&model={DEFAULT_MODEL}", raw) for raw in (False, True)]
    for response in (*thin, *full):
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert thin[0].content == thin[1].content == full[0].content == full[1].content
    assert thin[0].json()["model"]["name"] == DEFAULT_MODEL


def test_thin_path_errors_are_the_full_paths(service, happy_face_bytes):
    """An unknown model, an unreadable header, a truncated crop (its header read, so it is decoded in the batcher's
    thread, where it fails): each answered as the full path answers it."""
    assert decodes_quickly(happy_face_bytes[:1000])
    for raw, corrupt in [(False, b"\xff\xd8\xff" + b"\x00" * 64), (True, happy_face_bytes[:1000])]:
        unknown = predict(service, happy_face_bytes, "?model=no_such_model", raw)
        full_unknown = predict(service, happy_face_bytes, "?model=no_such_model&model=no_such_model", raw)
        assert unknown.status_code == full_unknown.status_code == 404 and unknown.content == full_unknown.content
        broken = predict(service, corrupt, raw=raw)
        full_broken = predict(service, corrupt, "?version=&version=", raw)
        assert broken.status_code == full_broken.status_code == 422 and broken.content == full_broken.content
        refused = predict(service, happy_face_bytes, raw=raw, key="wrong")
        assert refused.status_code == 401 and "API key" in refused.json()["detail"]
        assert predict(service, happy_face_bytes, raw=raw, key=None).status_code == 401


def test_thin_path_requests_are_counted_under_the_route(service, happy_face_bytes):
    def served() -> float:
        text = httpx.get(f"{service}/metrics", timeout=10).text
        line = 'emotion_requests_total{method="POST",route="/predict/face",status="200"}'
        return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line))

    before = served()
    assert predict(service, happy_face_bytes, raw=True).status_code == 200
    assert served() == before + 1


@pytest.fixture(scope="module")
def photo_bytes(face_photo) -> bytes:
    return cv2.imencode(".jpg", face_photo)[1].tobytes()


def test_image_thin_and_full_paths_answer_the_same_bytes(service, photo_bytes):
    """A plain photo upload (form or raw body, ``model`` alone in the query) takes the thin path; a repeated key or
    any other option (``max_faces``) the full one, and the answers are the same bytes."""
    image = functools.partial(predict, service, photo_bytes, route="image")
    query = f"?model={DEFAULT_MODEL}"
    thin = [image(query, raw) for raw in (False, True)]
    full = [image(f"{query}&model={DEFAULT_MODEL}", raw) for raw in (False, True)] + [image(f"{query}&max_faces=50")]
    for response in (*thin, *full):
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert len({r.content for r in (*thin, *full)}) == 1
    assert thin[0].json()["faces"] and thin[0].json()["model"]["name"] == DEFAULT_MODEL
    one = image(f"{query}&max_faces=1").json()
    assert len(one["faces"]) == 1  # the full path still reads the other options


def test_image_thin_path_errors_are_the_full_paths(service, photo_bytes):
    image = functools.partial(predict, service, route="image")
    for raw in (False, True):
        unknown = image(photo_bytes, "?model=no_such_model", raw)
        full_unknown = image(photo_bytes, "?model=no_such_model&model=no_such_model", raw)
        assert unknown.status_code == full_unknown.status_code == 404 and unknown.content == full_unknown.content
        broken = image(photo_bytes[:2000], "", raw)
        full_broken = image(photo_bytes[:2000], "?version=&version=", raw)
        assert broken.status_code == full_broken.status_code == 422 and broken.content == full_broken.content
        assert image(photo_bytes, "", raw, key="wrong").status_code == 401


def test_plain_uploads_solve_no_dependency_and_others_do(make_client, monkeypatch, photo_bytes, happy_face_bytes):
    """Which path a request took: FastAPI's full path solves the route's dependencies, the thin one does not."""
    import fastapi.routing

    solved: list[int] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args, **kwargs):
        solved.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    client = make_client()
    for route, data in (("image", photo_bytes), ("face", happy_face_bytes)):
        for query, full in (("", False), (f"?model={DEFAULT_MODEL}", False), ("?max_faces=2", True)):
            solved.clear()
            sent = client.post(f"/predict/{route}{query}", files={"file": ("a.jpg", data)})
            assert sent.status_code == 200 and bool(solved) is full, (route, query, solved)


def test_a_lone_photo_runs_in_the_models_thread_in_one_hop(make_client, monkeypatch, photo_bytes):
    """Alone, a photo's decode and detection run in the model's worker thread right before its model call; with other
    requests around (the batcher not idle) they run in a thread of their own, and the answers are the same. A photo
    without a face is answered on either path (the batcher's own test checks it costs no model call)."""
    from service.batching import MicroBatcher
    from service.pipelines.face import FacePipeline

    threads: list[str] = []
    prepare = FacePipeline._prepare_and_judge

    def recording(self, *args):
        threads.append(threading.current_thread().name)
        return prepare(self, *args)

    monkeypatch.setattr(FacePipeline, "_prepare_and_judge", recording)
    client = make_client()
    blank = cv2.imencode(".png", np.full((480, 640, 3), 90, np.uint8))[1].tobytes()
    answers = {}
    for idle in (True, False):
        monkeypatch.setattr(MicroBatcher, "idle", lambda self, idle=idle: idle)
        threads.clear()
        answers[idle] = [client.post("/predict/image", files={"file": ("a", data)}) for data in (photo_bytes, blank)]
        assert all(r.status_code == 200 for r in answers[idle])
        assert all(name.startswith("inference") is idle for name in threads) and len(threads) == 2, threads
    assert answers[True][0].content == answers[False][0].content and answers[True][0].json()["faces"]
    assert answers[True][1].json()["faces"] == answers[False][1].json()["faces"] == []


def test_rows_queued_behind_a_running_batch_go_when_it_ends():
    """They have had their batching delay: the worker is not kept waiting ``max_wait`` for requests still in flight."""
    release, calls = threading.Event(), []

    def slow(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        if len(calls) == 1:
            release.wait(5)
        return {"y": batch}

    async def scenario() -> float:
        batcher = MicroBatcher(slow, max_batch=64, max_wait_ms=10_000, pending=lambda: 10)
        first = asyncio.create_task(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.05)  # running (it was queued before the collector first looked)
        rest = [asyncio.create_task(batcher.submit(np.ones((1, 1)))) for _ in range(3)]
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        release.set()
        await asyncio.gather(first, *rest)
        await batcher.close()
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(scenario()) < 5 and calls == [1, 3]
