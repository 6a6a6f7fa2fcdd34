"""The demo page's webcam tab on the live stream (``WS /stream``) in a real browser: Debian's chromium, driven by
Playwright, whose fake camera plays a 3 s Y4M clip of a shared photo with a face, against a live
``python -m service`` that requires an API key. The key is typed in the page's field, as a user would: it travels as
the ``key.<key>`` subprotocol, or in the options message where it is not a token. Skips like
``tests/test_demo_browser.py`` when chromium or playwright is missing."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from benchmarks.synth import photo_on_canvas
from emotion_client.stream_messages import FRAME_TIME_MAGIC, STREAM_PATH, SUBPROTOCOL, pack_frame
from tests.live import serve
from tests.test_demo_browser import TIMEOUT_MS, fake_camera_chromium, write_y4m

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect

API_KEY = "demo-stream-test-key"
SPACED_KEY = "demo stream key/not a token"  # browsers cannot offer it as a subprotocol: it goes in the options
MODEL = "fer_emotion_cnn"  # the fast model


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(api_key=API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory, face_photo):
    """Chromium whose fake camera shows the face photo on a 640x480 canvas: 30 frames at 10 fps, looped."""
    camera = write_y4m(tmp_path_factory.mktemp("camera") / "face.y4m", photo_on_canvas(face_photo), 30, 10)
    yield from fake_camera_chromium(camera)


class Wire:
    """What the page's WebSocket to /stream sent and received (Playwright's frame events, delivered in order on the
    test's thread)."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.received: list[dict] = []
        self.most_outstanding = 0

    def attach(self, ws) -> None:
        if ws.url.endswith("/stream"):
            ws.on("framesent", self.on_sent)
            ws.on("framereceived", self.on_received)

    def on_sent(self, payload: str | bytes) -> None:
        self.sent.append(payload)
        self.most_outstanding = max(self.most_outstanding, self.frames() - self.answered())

    def on_received(self, payload: str | bytes) -> None:
        self.received.append(json.loads(payload))

    def frames(self) -> int:
        return sum(isinstance(m, bytes) for m in self.sent)

    def answered(self) -> int:
        return max((m["seq"] + 1 for m in self.received if isinstance(m.get("seq"), int)), default=0)

    def texts(self) -> list[dict]:
        return [json.loads(m) for m in self.sent if isinstance(m, str)]

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.received if m["type"] == kind]


def open_page(browser, url: str, wire: Wire | None = None):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    if wire:
        page.on("websocket", wire.attach)
    page.goto(url + "/")
    return page


@pytest.fixture
def wire() -> Wire:
    return Wire()


def checked_page(browser, url: str, wire: Wire) -> Iterator:
    """The demo page at ``url``, closed after the test; uncaught script errors fail the test."""
    page = open_page(browser, url, wire)
    yield page
    page.context.close()
    assert not page.errors, page.errors


@pytest.fixture
def page(browser, server, wire):
    yield from checked_page(browser, server, wire)


def start_stream(page, key: str, model: str | None = MODEL) -> None:
    """Type the key, pick the model (from the list the key loads), open the webcam tab and start it."""
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").dispatch_event("change")
    if model:
        option = page.locator(f'#model option[data-name="{model}"]').first
        expect(option).to_be_attached()
        page.locator("#model").select_option(option.get_attribute("value"))
    page.get_by_role("tab", name="Webcam").click()
    page.get_by_role("button", name="Start webcam").click()


def counter(page, selector: str) -> int:
    return int(page.locator(selector).inner_text())


def test_the_page_packs_frames_and_places_the_key_as_the_python_client_does(page):
    """stream.js's pure parts: a frame message byte for byte as ``pack_frame``; the key as a subprotocol only when
    it is a token."""
    packed, placements = page.evaluate(
        """async () => {
            const m = await import("/static/stream.js");
            const bytes = [...m.packFrame(new Uint8Array([255, 216, 255, 0, 1]), 12.375)];
            return [bytes, ["abc-DEF_1.~", "with space", "sl/ash", ""].map(m.keyPlacement)];
        }"""
    )
    assert bytes(packed) == pack_frame(bytes([255, 216, 255, 0, 1]), 12.375)
    assert placements == [
        {"protocols": ["emotion-stream", "key.abc-DEF_1.~"], "apiKey": None},
        {"protocols": ["emotion-stream"], "apiKey": "with space"},
        {"protocols": ["emotion-stream"], "apiKey": "sl/ash"},
        {"protocols": ["emotion-stream"], "apiKey": None},
    ]


def test_webcam_streams_tracked_faces_a_trace_and_a_final_summary(page, wire, tmp_path):
    start_stream(page, API_KEY)
    box = page.locator("#cam-boxes .box")
    expect(box).to_have_count(1)
    expect(box.first).to_have_text(re.compile(r"^#\d+ · \w+ \d+%$"))
    track_id = int(re.match(r"#(\d+)", box.first.inner_text()).group(1))
    expect(page.locator("#cam-faces .face h3")).to_have_text(f"Track #{track_id}")
    expect(page.locator("#cam-status")).to_have_text("Live · 1 face")
    expect(page.locator("#cam-trace")).to_have_attribute("data-tracks", "1")
    expect(page.locator("#cam-trace")).not_to_have_attribute("data-points", re.compile(r"^[012]$"))
    expect(page.locator("#cam-trace-legend li")).to_contain_text(f"#{track_id} valence")
    first = counter(page, "#cam-answered")
    page.wait_for_timeout(2000)
    assert counter(page, "#cam-answered") > first, "no more frames delivered in 2 s"
    expect(page.locator("#cam-fps")).to_have_text(re.compile(r"^\d+\.\d$"))
    expect(page.locator("#cam-server-ms")).to_have_text(re.compile(r"^\d+\.\d$"))
    page.screenshot(path=tmp_path / "webcam-stream.png", full_page=True)

    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#cam-status")).to_have_text("Camera off.")
    summary = page.locator("#cam-summary")
    expect(summary).to_be_visible()
    expect(summary.locator("li.summary-track")).to_have_count(1)
    expect(summary.locator("li.summary-track")).to_contain_text(f"#{track_id}")
    expect(page.get_by_role("alert")).to_be_hidden()
    assert page.locator("#cam-video").evaluate("v => v.srcObject") is None
    page.screenshot(path=tmp_path / "webcam-summary.png", full_page=True)

    final = wire.of_type("summary")[-1]
    assert final["final"] and [t["track_id"] for t in final["tracks"]] == [track_id]
    expect(summary.locator("#cam-summary-frames")).to_contain_text(f"{final['frames']['analysed']} of ")
    options, *controls = wire.texts()
    assert options == {"type": "options", "model": MODEL, "version": options["version"], "smoothing": 0.25}
    assert controls == [{"type": "close"}]  # the key went as the subprotocol, not in the options
    assert wire.of_type("ready")[0]["model"]["name"] == MODEL
    frames = [m for m in wire.sent if isinstance(m, bytes)]
    assert all(m[:4] == FRAME_TIME_MAGIC and m[12:14] == b"\xff\xd8" for m in frames)  # EMT1, time, a JPEG
    times = [struct.unpack("<d", m[4:12])[0] for m in frames]
    assert times == sorted(times) and 0 <= times[0] < times[-1]
    assert wire.most_outstanding <= 2, f"{wire.most_outstanding} frames were unanswered at once"


def test_a_wrong_key_is_refused_with_the_reason(page, wire):
    start_stream(page, "not-the-key", model=None)  # the model list is refused too (401): the service's default
    error = page.get_by_role("alert")
    expect(error).to_contain_text("Live stream closed (1008): wrong API key")
    expect(error).to_contain_text("Enter the service's API key above")
    expect(page.locator("#cam-status")).to_have_text("Camera off.")
    expect(page.get_by_role("button", name="Start webcam")).to_be_enabled()
    assert wire.frames() == 0


@pytest.fixture(scope="module")
def one_session_server() -> Iterator[str]:
    """A service whose key is not a token and that takes one live session at a time."""
    with serve(api_key=SPACED_KEY, stream__max_sessions="1") as url:
        yield url


@pytest.fixture
def one_session_page(browser, one_session_server, wire):
    yield from checked_page(browser, one_session_server, wire)


def test_a_key_that_is_not_a_token_goes_in_the_options(one_session_page, wire):
    start_stream(one_session_page, SPACED_KEY)
    expect(one_session_page.locator("#cam-boxes .box")).to_have_count(1)
    assert wire.texts()[0]["api_key"] == SPACED_KEY
    one_session_page.get_by_role("button", name="Stop").click()
    expect(one_session_page.locator("#cam-summary li.summary-track")).to_have_count(1)


def test_a_full_service_is_reported_as_try_again_later(one_session_page, one_session_server):
    url = one_session_server.replace("http://", "ws://") + STREAM_PATH
    with connect(url, additional_headers={"X-API-Key": SPACED_KEY}, subprotocols=[SUBPROTOCOL]) as held:
        held.send(json.dumps({"type": "options", "model": MODEL}))
        assert json.loads(held.recv(timeout=60))["type"] == "ready"  # the one place is taken
        start_stream(one_session_page, SPACED_KEY)
        error = one_session_page.get_by_role("alert")
        expect(error).to_contain_text("Live stream closed (1013):")
        expect(error).to_contain_text("Wait a moment, then start the webcam again.")
        expect(one_session_page.locator("#cam-status")).to_have_text("Camera off.")


def test_switching_tabs_ends_the_session(page, wire):
    start_stream(page, API_KEY)
    expect(page.locator("#cam-boxes .box")).to_have_count(1)
    page.get_by_role("tab", name="Photo").click()
    expect(page.locator("#cam-status")).to_have_text("Camera off.")
    page.wait_for_function("() => !document.querySelector('#cam-summary').hidden")
    assert wire.texts()[-1] == {"type": "close"} and wire.of_type("summary")[-1]["final"]
    sent = wire.frames()
    page.wait_for_timeout(800)
    assert wire.frames() == sent, "frames were still sent after the tab was left"
