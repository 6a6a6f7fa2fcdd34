"""The Python client's live sessions (``EmotionClient.stream``/``stream_session`` and their asyncio twins) against
a small fake ``WS /stream`` (websockets' own server on a thread, real sockets) that records what it receives:
options first, the key as a header, frames as JPEG with their capture time, typed results, the summary at close,
close codes as ``StreamClosed``, and frames sent while results are read. Then end to end against the real service
(``python -m service``, the fast model): one face followed with one track id, every frame accounted for."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from emotion_client import (
    AsyncEmotionClient,
    EmotionAPIError,
    EmotionClient,
    EmotionConnectionError,
    StreamClosed,
    StreamFace,
    StreamResult,
    StreamSummary,
)
from emotion_client.stream import stream_url
from emotion_client.stream_messages import unpack_frame
from tests.live import free_port, serve
from tests.stream_support import moving_face

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60  # what the fake takes for a readable frame
LABELS = ["angry", "happy", "neutral"]


def face(track_id: int = 1) -> dict:
    affect = {"emotions": {"angry": 0.1, "happy": 0.8, "neutral": 0.1}, "dominant": "happy", "valence": 0.6}
    box = {"x": 1, "y": 2, "width": 30, "height": 30}
    return {"track_id": track_id, "box": box, "score": 0.9, **affect, "arousal": 0.2, "raw": affect}


def summary(final: bool, received: int) -> dict:
    mean = {"emotions": {"angry": 0.1, "happy": 0.8, "neutral": 0.1}, "dominant": "happy", "share": {"happy": 1.0}}
    track = {"track_id": 1, "first_seen": 0.0, "last_seen": 1.0, "samples": received,
             "segments": [{"start": 0.0, "end": 1.0, "dominant": "happy"}], "summary": mean}  # fmt: skip
    counts = {"received": received, "analysed": received, "dropped": 0, "bad": 0}
    return {"type": "summary", "final": final, "tracks": [track], "frames": counts, "summary": mean}


@dataclass
class FakeService:
    """How the fake behaves, and what it saw. Frames are read on one task and answered on another (as the real
    server does), so arrival times are true ones."""

    reply_delay: float = 0.0
    max_frame_bytes: int = 1_000_000
    close_after_options: tuple[int, str] | None = None
    close_at_frame: tuple[int, int, str] | None = None  # (frame index, code, reason)
    status: int | None = None  # refuse the handshake with this HTTP status
    session_frames: int | None = None  # after this many answers: the final summary, then 1001 (max_session_s)
    requests: list[Any] = field(default_factory=list)  # (path, headers, subprotocol) per connection
    texts: list[dict] = field(default_factory=list)
    frames: list[tuple[float, bytes, float | None]] = field(default_factory=list)  # (arrival, image, t)
    replies: list[float] = field(default_factory=list)  # when each frame's answer was sent

    def refuse(self, connection: ServerConnection, request: Any) -> Response | None:
        self.requests.append((request.path, request.headers, None))
        if self.status is not None:
            return Response(self.status, "Refused", Headers({"Retry-After": "0"}), b"no stream here")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        path, headers, _ = self.requests[-1]
        self.requests[-1] = (path, headers, ws.subprotocol)
        self.texts.append(json.loads(await ws.recv()))
        if self.close_after_options:
            await ws.close(*self.close_after_options)
            return
        ready = {"type": "ready", "session": "s1", "model": {"name": "fake", "version": "1.0.0"}, "labels": LABELS,
                 "valence_arousal_source": "predicted", "max_frame_bytes": self.max_frame_bytes,
                 "idle_timeout_s": 30}  # fmt: skip
        await ws.send(json.dumps(ready))
        queue: asyncio.Queue = asyncio.Queue()
        answering = asyncio.create_task(self.answer(ws, queue))
        try:
            async for message in ws:
                await self.take(ws, message, queue)
        finally:
            answering.cancel()

    async def take(self, ws: ServerConnection, message: str | bytes, queue: asyncio.Queue) -> None:
        if isinstance(message, str):
            self.texts.append(json.loads(message))
            await queue.put(self.texts[-1])
            return
        image, t = unpack_frame(message)
        self.frames.append((time.monotonic(), image, t))
        seq = ws.seen = getattr(ws, "seen", -1) + 1  # this session's frame number
        if self.close_at_frame and self.close_at_frame[0] == seq:
            await ws.close(*self.close_at_frame[1:])
        await queue.put((seq, image, t))

    async def answer(self, ws: ServerConnection, queue: asyncio.Queue) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, dict):  # a control: answered after every frame before it
                await ws.send(json.dumps(summary(item["type"] == "close", getattr(ws, "seen", -1) + 1)))
                if item["type"] == "close":
                    await ws.close(1000)
                    return
                continue
            seq, image, t = item
            await asyncio.sleep(self.reply_delay)
            if not image.startswith(b"\xff\xd8\xff"):
                await ws.send(json.dumps({"type": "error", "seq": seq, "detail": "not an image"}))
            else:
                result = {"type": "result", "seq": seq, "t": seq / 10 if t is None else t, "skipped": 0, "width": 64,
                          "height": 48, "faces": [face()], "server_ms": 1.5}  # fmt: skip
                await ws.send(json.dumps(result))
            self.replies.append(time.monotonic())
            if self.session_frames is not None and seq + 1 == self.session_frames:
                await ws.send(json.dumps(summary(True, seq + 1)))
                await ws.close(1001, "longer than 4 s")
                return


@contextmanager
def fake_stream(service: FakeService, base: str = "") -> Iterator[str]:
    """The fake on a free port, on its own thread and event loop; yields the service URL (``base`` path kept)."""
    port, started, stop = free_port(), threading.Event(), threading.Event()

    async def main() -> None:
        async with ws_serve(service.handle, "127.0.0.1", port, process_request=service.refuse, compression=None,
                         select_subprotocol=lambda ws, offered: offered[0] if offered else None):  # fmt: skip
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}{base}"
    finally:
        stop.set()
        thread.join(10)


def test_stream_url_keeps_the_base_path_and_secures_https():
    assert stream_url("http://host:8000") == "ws://host:8000/stream"
    assert stream_url("https://example.org/emotion/") == "wss://example.org/emotion/stream"
    with pytest.raises(ValueError, match="http"):
        stream_url("ftp://host")


def test_options_go_first_with_the_key_header_and_results_come_typed():
    service = FakeService()
    frames = [JPEG, np.full((48, 64, 3), 128, np.uint8), JPEG]
    with fake_stream(service, "/base") as url, EmotionClient(url, "k-1", retries=0) as client:
        stream = client.stream(frames, model="fer_emotion_cnn", max_faces=2, timestamps=lambda i: 100.0 + i)
        results = list(stream)
    assert service.texts[0] == {"type": "options", "model": "fer_emotion_cnn", "max_faces": 2}
    assert service.texts[-1] == {"type": "close"}
    path, headers, subprotocol = service.requests[0]
    assert path == "/base/stream" and headers["X-API-Key"] == "k-1" and subprotocol == "emotion-stream"
    assert headers["User-Agent"].startswith("emotion-client/")
    assert [t for _, _, t in service.frames] == [100.0, 101.0, 102.0]
    assert all(image.startswith(b"\xff\xd8\xff") for _, image, _ in service.frames)  # the numpy frame as JPEG
    assert [r.seq for r in results] == [0, 1, 2] and [r.t for r in results] == [100.0, 101.0, 102.0]
    assert all(isinstance(r, StreamResult) and isinstance(r.faces[0], StreamFace) for r in results)
    assert results[0].faces[0].track_id == 1 and results[0].faces[0].raw.dominant == "happy"
    assert stream.ready.labels == LABELS and stream.close_code == 1000
    assert isinstance(stream.summary, StreamSummary) and stream.summary.final
    assert stream.summary.frames.received == 3 and stream.summary.tracks[0].track_id == 1


def test_unreadable_frames_are_collected_and_the_session_goes_on():
    service = FakeService()
    with fake_stream(service) as url, EmotionClient(url, retries=0) as client:
        stream = client.stream([JPEG, b"not an image", JPEG])
        assert [r.seq for r in stream] == [0, 2]
    assert [(e.seq, e.detail) for e in stream.errors] == [(1, "not an image")]
    assert "X-API-Key" not in service.requests[0][1]


def test_frames_are_sent_while_results_are_read():
    """Replies 0.3 s slow: every frame is at the server before the first reply (the sender does not wait); and a
    producer slower than the replies sees its first result before it has yielded its last frame."""
    service = FakeService(reply_delay=0.3)
    with fake_stream(service) as url, EmotionClient(url, retries=0) as client:
        assert len(list(client.stream([JPEG] * 8))) == 8
    assert service.frames[-1][0] < service.replies[0]

    produced: list[float] = []
    got: list[float] = []

    def slow_camera() -> Iterator[bytes]:
        for _ in range(8):
            time.sleep(0.05)
            produced.append(time.monotonic())
            yield JPEG

    with fake_stream(FakeService()) as url, EmotionClient(url, retries=0) as client:
        for _ in client.stream(slow_camera()):
            got.append(time.monotonic())
    assert len(got) == 8 and got[0] < produced[-1]


def test_lockstep_sends_each_frame_after_the_previous_answer():
    service = FakeService(reply_delay=0.05)
    with fake_stream(service) as url, EmotionClient(url, retries=0) as client:
        assert [r.seq for r in client.stream([JPEG] * 5, pace="lockstep")] == [0, 1, 2, 3, 4]
    arrivals = [a for a, _, _ in service.frames]
    assert all(arrivals[i + 1] >= service.replies[i] for i in range(4))


def test_a_rate_paces_the_frames():
    service = FakeService()
    with fake_stream(service) as url, EmotionClient(url, retries=0) as client:
        list(client.stream([JPEG] * 5, pace=20.0))
    arrivals = [a for a, _, _ in service.frames]
    assert arrivals[-1] - arrivals[0] >= 0.18  # 4 intervals of 0.05 s
    with pytest.raises(ValueError, match="pace"):
        EmotionClient("http://127.0.0.1:9").stream([], pace=0)


@pytest.mark.parametrize("code", [1007, 1008])
def test_a_refused_session_raises_stream_closed_with_its_code(code):
    service = FakeService(close_after_options=(code, "refused: why"))
    with (
        fake_stream(service) as url,
        EmotionClient(url, retries=2, backoff=0.01) as client,
        pytest.raises(StreamClosed, match="refused: why") as caught,
    ):
        list(client.stream([JPEG]))
    assert caught.value.code == code and len(service.requests) == 1  # not retried


def test_too_many_sessions_is_retried_then_raised():
    service = FakeService(close_after_options=(1013, "try again later"))
    with (
        fake_stream(service) as url,
        EmotionClient(url, retries=2, backoff=0.01) as client,
        pytest.raises(StreamClosed) as caught,
    ):
        client.stream_session()
    assert caught.value.code == 1013 and len(service.requests) == 3


def test_a_close_mid_session_ends_the_iteration_with_stream_closed():
    service = FakeService(reply_delay=0.02, close_at_frame=(2, 1009, "frame too big"))
    with fake_stream(service) as url, EmotionClient(url, retries=0) as client:
        stream = client.stream([JPEG] * 50, pace=50.0)
        with pytest.raises(StreamClosed, match="frame too big") as caught:
            list(stream)
    assert caught.value.code == 1009 and stream.close_code == 1009 and stream.summary is None


def test_a_session_the_server_ends_after_its_final_summary_just_ends():
    service = FakeService(session_frames=3)
    with fake_stream(service) as url, EmotionClient(url, retries=0) as client:
        stream = client.stream([JPEG] * 30, pace="lockstep")
        assert [r.seq for r in stream] == [0, 1, 2]
    assert stream.close_code == 1001 and stream.summary.final and stream.summary.frames.received == 3


def test_handshake_refusals_and_unreachable_servers():
    with (
        fake_stream(FakeService(status=404)) as url,
        EmotionClient(url, retries=0) as client,
        pytest.raises(EmotionAPIError) as caught,
    ):
        list(client.stream([JPEG]))
    assert caught.value.status == 404 and "no stream here" in str(caught.value.detail)
    with (
        EmotionClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01) as client,
        pytest.raises(EmotionConnectionError, match=r"ws://127\.0\.0\.1"),
    ):
        client.stream_session()


def test_a_frame_over_the_servers_limit_is_refused_before_sending():
    service = FakeService(max_frame_bytes=100)
    with (
        fake_stream(service) as url,
        EmotionClient(url, retries=0) as client,
        pytest.raises(ValueError, match="max_frame_bytes"),
    ):
        list(client.stream([JPEG, JPEG + b"\x00" * 200]))
    assert len(service.frames) == 1


def test_a_failing_frame_source_raises_from_the_iteration():
    def frames() -> Iterator[bytes]:
        yield JPEG
        raise OSError("camera unplugged")

    with (
        fake_stream(FakeService(reply_delay=0.1)) as url,
        EmotionClient(url, retries=0) as client,
        pytest.raises(OSError, match="camera unplugged"),
    ):
        list(client.stream(frames()))


def test_leaving_early_still_closes_with_the_final_summary():
    service = FakeService()
    with (
        fake_stream(service) as url,
        EmotionClient(url, retries=0) as client,
        client.stream(iter(lambda: JPEG, None), pace=100.0) as stream,
    ):  # an endless source
        for result in stream:
            if result.seq == 3:
                break
    assert stream.summary is not None and stream.summary.final and service.texts[-1] == {"type": "close"}


def test_a_session_by_hand_keeps_results_met_while_waiting_for_a_summary():
    service = FakeService()
    with (
        fake_stream(service) as url,
        EmotionClient(url, retries=0) as client,
        client.stream_session(smoothing=0.5) as session,
    ):
        session.send(JPEG, t=1.5)
        session.send(JPEG)
        running = session.summary()
        first, second = session.receive(timeout=5), session.receive(timeout=5)
        final = session.close()
        assert session.receive() is None
    assert service.texts[0] == {"type": "options", "smoothing": 0.5}
    assert not running.final and running.frames.received == 2
    assert (first.seq, first.t, second.seq) == (0, 1.5, 1)
    assert final.final and session.close_code == 1000


def test_async_stream_takes_sync_and_async_frames():
    service = FakeService(reply_delay=0.2)

    async def frames():
        for _ in range(4):
            yield JPEG

    async def main() -> tuple:
        async with AsyncEmotionClient(url, "k-2", retries=0) as client:
            stream = client.stream(frames(), model="m", timestamps=lambda i: i * 0.5)
            results = [r async for r in stream]
            listed = [r async for r in client.stream([JPEG, np.zeros((8, 8), np.uint8)], pace="lockstep")]
        return stream, results, listed

    with fake_stream(service) as url:
        stream, results, listed = asyncio.run(main())
    assert service.texts[0] == {"type": "options", "model": "m"} and service.requests[0][1]["X-API-Key"] == "k-2"
    assert [r.t for r in results] == [0.0, 0.5, 1.0, 1.5] and results[0].faces[0].dominant == "happy"
    assert service.frames[3][0] < service.replies[0]  # all four sent before the first (slow) reply
    assert stream.summary.final and stream.close_code == 1000
    assert [r.seq for r in listed] == [0, 1]


def test_async_close_codes_and_sessions_by_hand():
    async def refused(url: str) -> None:
        async with AsyncEmotionClient(url, retries=0) as client:
            async for _ in client.stream([JPEG]):
                pass

    with (
        fake_stream(FakeService(close_after_options=(1008, "API key required"))) as url,
        pytest.raises(StreamClosed, match="API key required") as caught,
    ):
        asyncio.run(refused(url))
    assert caught.value.code == 1008

    async def by_hand(url: str) -> tuple:
        async with AsyncEmotionClient(url, retries=0) as client:
            session = await client.stream_session(max_faces=1)
            async with session:
                await session.send(JPEG, t=2.0)
                running = await session.summary()
                result = await session.receive(timeout=5)
                final = await session.close()
        return running, result, final, session.close_code

    with fake_stream(FakeService()) as url:
        running, result, final, code = asyncio.run(by_hand(url))
    assert not running.final and result.t == 2.0 and final.final and code == 1000


def test_async_stream_leaving_early_and_a_failing_source():
    service = FakeService()

    async def endless():
        while True:
            yield JPEG
            await asyncio.sleep(0.01)

    async def early(url: str) -> Any:
        async with AsyncEmotionClient(url, retries=0) as client, client.stream(endless()) as stream:
            async for result in stream:
                if result.seq >= 2:
                    break
        return stream

    async def failing(url: str) -> None:
        def frames():
            yield JPEG
            raise OSError("file truncated")

        async with AsyncEmotionClient(url, retries=0) as client:
            async for _ in client.stream(frames()):
                pass

    with fake_stream(service) as url:
        stream = asyncio.run(early(url))
        assert stream.summary.final and service.texts[-1] == {"type": "close"}
        with pytest.raises(OSError, match="file truncated"):
            asyncio.run(failing(url))


# --- end to end: the real service (python -m service), the fast model ---------------------------------------------

KEY = "stream-key-7"
FAST = "fer_emotion_cnn"


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    with serve(api_key=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def walk(face_photo) -> list[bytes]:
    """20 JPEG frames of a real face moving right: the same bytes go to the stream and to /predict/image."""
    return [cv2.imencode(".jpg", frame)[1].tobytes() for frame in moving_face(face_photo, 20)]


def one_track(results: list[StreamResult], labels: list[str]) -> int:
    """The single track id every result's single face carries."""
    assert all(len(r.faces) == 1 for r in results), [len(r.faces) for r in results]
    assert all(f.dominant in labels and f.raw.dominant in labels for r in results for f in r.faces)
    (track,) = {r.faces[0].track_id for r in results}
    return track


def test_sync_stream_follows_one_face_with_the_photos_label(live, walk):
    photo = httpx.post(f"{live}/predict/image", content=walk[0], params={"model": FAST},
                       headers={"X-API-Key": KEY, "Content-Type": "image/jpeg"}, timeout=60).json()  # fmt: skip
    with EmotionClient(live, KEY, retries=0) as client:
        stream = client.stream(walk, model=FAST, pace="lockstep", timestamps=lambda i: i / 10)
        results = list(stream)
    assert [r.seq for r in results] == list(range(20)) and [r.t for r in results] == [i / 10 for i in range(20)]
    assert stream.ready.model.name == FAST
    track = one_track(results, stream.ready.labels)
    assert results[0].faces[0].raw.dominant == photo["faces"][0]["dominant"]
    assert results[0].faces[0].raw.emotions == pytest.approx(photo["faces"][0]["emotions"], abs=0.02)
    assert [t.track_id for t in stream.summary.tracks] == [track] and stream.summary.frames.analysed == 20


def test_async_stream_as_fast_as_it_can_counts_every_frame(live, walk):
    """Frames sent without waiting: the server analyses what it can, and every frame is a result or skipped; in
    lockstep every frame is analysed and the face keeps one track."""

    async def frames():
        for frame in walk:
            yield frame

    async def main() -> tuple:
        async with AsyncEmotionClient(live, KEY, retries=0) as client:
            stream = client.stream(frames(), model=FAST)
            stepped = [r async for r in client.stream(walk, model=FAST, pace="lockstep")]
            return stream, [r async for r in stream], stepped

    stream, results, stepped = asyncio.run(main())
    assert [r.seq for r in stepped] == list(range(20)) and one_track(stepped, stream.ready.labels) >= 1
    counts = stream.summary.frames
    assert counts.received == 20 and len(results) + sum(r.skipped for r in results) == 20
    assert counts.analysed == len(results) and counts.dropped == sum(r.skipped for r in results)
    assert all(len(r.faces) == 1 and r.faces[0].dominant in stream.ready.labels for r in results)
    # a face that jumped past the dropped frames may start a new track: the summary has each one
    assert {t.track_id for t in stream.summary.tracks} == {r.faces[0].track_id for r in results}


def test_a_wrong_key_is_closed_with_1008(live, walk):
    with EmotionClient(live, "wrong", retries=0) as client, pytest.raises(StreamClosed) as caught:
        list(client.stream(walk[:1]))
    assert caught.value.code == 1008 and "wrong API key" in caught.value.reason
