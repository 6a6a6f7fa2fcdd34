"""The pure pieces of live streams, without models or files: the incremental timeline forms equal the video path's
batch ones, the one-slot mailbox counts what it drops, the stream's detection cadence equals the video's at the same
spacing, the options message's parsing and close reasons, and the AsyncAPI document's references."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import numpy as np
import pytest

from emotion_client.stream_messages import StreamOptions, StreamResult
from service.api.body import BodyGuardMiddleware, BodyRules
from service.api.middleware import MetricsMiddleware, MultipartCloseMiddleware
from service.api.routes.docs import asyncapi_document
from service.api.routes.stream import Ending, parse_first, reason_text
from service.config import Settings
from service.metrics import Metrics
from service.options import Requested, resolve_options
from service.results import Sample
from service.stream import Cadence, Frame, Mailbox
from service.video.timeline import Ema, RunningSummary, Segments, segments, smooth, summarize
from service.video.tracks import TrackState, build_tracks
from tests.factories import manifest
from tests.test_timeline import preds

LABELS = ["angry", "happy", "sad"]


def uneven(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples at uneven times, rows of probabilities over three labels."""
    rng = np.random.default_rng(seed)
    times = np.round(np.cumsum(rng.uniform(0.05, 0.6, n)), 3)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return times, probs


# --- incremental forms equal the batch ones ---------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.1, 0.5, 3.0])
def test_ema_sample_by_sample_equals_batch_smooth(tau):
    times, probs = uneven(40)
    ema = Ema(tau)
    live = np.stack([ema.update(float(t), row) for t, row in zip(times, probs, strict=True)])
    np.testing.assert_array_equal(live, smooth(times, probs, tau))
    if tau:
        assert not np.allclose(live, probs)  # it did smooth


def test_ema_does_not_keep_a_reference_to_its_input():
    row = np.array([1.0, 0.0])
    ema = Ema(1.0)
    ema.update(0.0, row)
    row[:] = 0.0
    np.testing.assert_array_equal(ema.update(1.0, np.array([0.0, 1.0])), [np.exp(-1), 1 - np.exp(-1)])


def test_segments_extended_one_sample_at_a_time_equal_segments():
    times = [0.0, 0.2, 0.4, 0.6, 1.4, 1.6, 1.8, 2.0]
    labels = ["happy", "happy", "sad", "sad", "sad", "happy", "happy", "happy"]
    runs = Segments()
    for t, label in zip(times, labels, strict=True):
        runs.extend(t, label, 0.2, 2.1)
    assert runs.runs == segments(times, labels, 0.2, 2.1)
    assert [(s.start, s.end, s.dominant) for s in runs.runs] == [
        (0.0, 0.4, "happy"),
        (0.4, 0.8, "sad"),
        (1.4, 1.6, "sad"),  # a gap longer than a step starts a new run
        (1.6, 2.1, "happy"),  # the last ends at the duration
    ]


def test_running_summary_gives_summarize_numbers_sample_by_sample():
    _, probs = uneven(25, seed=3)
    va = np.random.default_rng(4).uniform(-1, 1, (25, 2))
    running = RunningSummary(LABELS)
    assert running.summary() is None
    for row, pair in zip(probs, va, strict=True):
        running.add(row, pair)
    live, batch = running.summary(), summarize(probs, va, LABELS)
    assert live is not None and live.dominant == batch.dominant
    assert live.emotions == pytest.approx(dict(zip(LABELS, probs.mean(axis=0).tolist(), strict=True)), abs=1e-6)
    assert live.emotions == pytest.approx(batch.emotions, abs=1e-6) and live.share == batch.share
    assert (live.valence, live.arousal) == pytest.approx((va[:, 0].mean(), va[:, 1].mean()))


def test_track_state_gives_build_tracks_timeline_segments_and_summary():
    times, probs = uneven(30, seed=5)
    model = manifest(LABELS, valence_arousal="derived")
    samples = [Sample(float(t), i, (0, 0, 10, 10), 7) for i, t in enumerate(times)]
    [track], _ = build_tracks(model, preds(probs.tolist()), samples, 0.4, 0.2, 0.0)
    state = TrackState(7, model, 0.4, float(times[0]))
    out = [state.add(float(t), row, None, 0.2) for t, row in zip(times, probs, strict=True)]
    for (p, va), point in zip(out, track.timeline, strict=True):
        assert dict(zip(LABELS, p.tolist(), strict=True)) == pytest.approx(point.prediction.emotions, abs=1e-6)
        # float32 sums over a batch and over one row round differently with the CPU's vector width (1e-8 here)
        expected = (point.prediction.valence, point.prediction.arousal)
        assert (float(va[0]), float(va[1])) == pytest.approx(expected, abs=1e-6)
    assert state.segments.runs == track.segments
    summary = state.summary.summary()
    assert summary is not None and summary.dominant == track.summary.dominant
    assert summary.emotions == pytest.approx(track.summary.emotions, abs=1e-6)
    assert (state.samples, state.first_seen, state.last_seen) == (30, track.first_seen, track.last_seen)


# --- the mailbox ------------------------------------------------------------------------------------------------


def frame(seq: int) -> Frame:
    return Frame(seq, b"", seq * 0.1)


def test_mailbox_keeps_the_newest_frame_and_counts_each_one_it_drops():
    async def scenario() -> None:
        box = Mailbox()
        assert box.put(frame(0)) is False
        assert [box.put(frame(i)) for i in (1, 2, 3)] == [True, True, True]
        got = await box.get()
        assert got is not None and got[0].seq == 3 and got[1] == 3 and box.dropped == 3
        box.put(frame(4))
        got = await box.get()
        assert got is not None and got == (frame(4), 0)  # nothing dropped since the last get
        waiter = asyncio.create_task(box.get())
        await asyncio.sleep(0)
        assert not waiter.done()  # empty: get waits for the next frame
        box.put(frame(5))
        assert (await waiter) == (frame(5), 0)
        box.put(frame(6))
        box.close()
        assert (await box.get()) == (frame(6), 0)  # close hands out what is waiting first
        assert (await box.get()) is None
        assert box.discard() == 0 and box.dropped == 3

    asyncio.run(scenario())


def test_mailbox_discard_counts_the_frame_left_waiting():
    box = Mailbox()
    box.put(frame(0))
    assert box.discard() == 1 and box.dropped == 1 and box.discard() == 0


# --- the cadence ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "period"), [(5, 1.0), (5, 0.5), (10, 0.5), (25, 0.3), (4, 0.0), (30, 2.0)])
def test_stream_cadence_at_sample_fps_spacing_equals_the_video_cadence(fps, period):
    video = resolve_options(Settings(_env_file=None, video={"full_detect_every_s": period}), Requested(sample_fps=fps))
    cadence = Cadence(period)
    cadence.tick(0.0)
    assert cadence.every == 1  # no rate yet: the first frame gets a whole-frame pass anyway
    for i in range(1, 20):
        cadence.tick(i / fps)
        assert cadence.every == video.full_detect_every
    assert cadence.step == pytest.approx(1 / fps)


def test_stream_cadence_follows_the_rate_of_analysed_frames():
    cadence = Cadence(1.0)
    for i in range(10):
        cadence.tick(i * 0.1)
    assert cadence.every == 10
    for i in range(10):
        cadence.tick(1.0 + i * 0.5)  # frames dropped: analysed ones 0.5 s apart
    assert cadence.every == 2
    cadence.tick(5.0)
    cadence.tick(5.0)  # a repeated time is no gap
    assert cadence.every == 2


# --- the options message ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nope", "not JSON"),
        ('"options"', "JSON object"),
        ('{"type": "options", "fps": 5}', "unknown option 'fps'"),
        ('{"max_faces": -1}', "option 'max_faces'"),
        ('{"type": "configure"}', "option 'type'"),
        ('{"type": "close", "now": true}', "unknown option 'now'"),
    ],
)
def test_malformed_options_end_with_1007_and_a_reason(text, fragment):
    with pytest.raises(Ending) as ended:
        parse_first(text)
    assert ended.value.code == 1007 and fragment in ended.value.reason


def test_options_and_controls_parse():
    assert parse_first('{"type": "options", "smoothing": 0}') == StreamOptions(smoothing=0)
    assert parse_first("{}") == StreamOptions()
    assert parse_first('{"type": "summary"}').type == "summary"


def test_close_reasons_fit_a_close_frame():
    assert len(reason_text("é" * 200).encode()) <= 123 and reason_text("short") == "short"


# --- the AsyncAPI document --------------------------------------------------------------------------------------


def test_asyncapi_document_references_resolve_and_its_schemas_validate_real_messages():
    doc = asyncapi_document("1.0.0")
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/')[1:]}:
        node = doc
        for key in ref.split("/"):
            assert key in node, f"unresolved $ref #/{ref}"
            node = node[key]
    channel = doc["channels"]["/stream"]
    assert len(channel["publish"]["message"]["oneOf"]) == 3 and len(channel["subscribe"]["message"]["oneOf"]) == 4
    result = StreamResult(seq=0, t=0.0, width=4, height=4, faces=[], server_ms=1.0).model_dump(mode="json")
    schema = {"$ref": "#/components/schemas/StreamResult", "components": doc["components"]}
    jsonschema.validate(result, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**result, "seq": "first"}, schema)


# --- the HTTP middlewares let WebSockets through ------------------------------------------------------------------


def test_the_http_middlewares_pass_a_websocket_scope_through_untouched_and_uncounted():
    metrics, seen = Metrics(), []

    async def app(scope, receive, send) -> None:
        seen.append((scope, receive, send, metrics.active, metrics.receiving))

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        return None

    scope = {"type": "websocket", "path": "/stream", "headers": [(b"content-type", b"multipart/form-data; boundary=x")]}
    stack = MultipartCloseMiddleware(
        BodyGuardMiddleware(MetricsMiddleware(app, metrics, max_in_flight=0, max_receiving=0), BodyRules(1, 1.0))
    )
    asyncio.run(stack(dict(scope), receive, send))
    [(passed, got_receive, got_send, active, receiving)] = seen
    assert passed == scope and got_receive is receive and got_send is send  # not wrapped, no keys added
    assert (active, receiving) == (0, 0) and metrics.rejected._value.get() == 0  # never shed, even when "full"
