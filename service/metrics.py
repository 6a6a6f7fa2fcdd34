"""Prometheus metrics, one registry per app: every metric is defined and observed here; the HTTP middleware and
the pipelines call these methods rather than touching metric objects of their own.

Labelled series whose labels are known before their first event (the app's routes, the models in the store, the
final job statuses, the reload triggers) are created at zero up front (``known_*``), as Prometheus advises: a
dashboard then has its series from the first scrape, and ``rate()``/``increase()`` see the first event.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

if TYPE_CHECKING:
    from service.results import VideoResult

# Set (by ``python -m service --workers N``: service/processes.py) before prometheus_client is imported: every
# process then writes its series to files there, and a scrape of any of them sums them all (gauges by the mode each
# is declared with).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# what ModelRegistry.reload is called with: POST /models/reload, the timer, another server process's reload
RELOAD_TRIGGERS = ("api", "periodic", "peer")
STREAM_OUTCOMES = ("received", "analysed", "dropped", "bad")  # what became of each frame of a live stream
# how a video's sampled frames were searched (FrameDetector.counts): the steps the video counter charts
VIDEO_DETECTION_STEPS = (
    "full_frame_passes",
    "full_frame_passes_put_off",
    "regions_searched",
    "regions_carried_forward",
)
# How live sessions end: the server's close codes (docs/stream.md; 1012: uvicorn stopping), and a client's own close
# (1000, 1001) or a connection lost without one (1005 or 1006, as the WebSocket implementation reports it).
STREAM_CLOSE_CODES = ("1000", "1001", "1005", "1006", "1007", "1008", "1009", "1011", "1012", "1013")


class Metrics:
    def __init__(self) -> None:
        self.active = 0  # requests being handled now, probes aside (the in-flight gauge, readable without prometheus)
        self.receiving = 0  # requests whose body is still arriving (they hold no in-flight place until it is in)
        self.streams = 0  # live WS /stream sessions now (they hold no in-flight place: they are not requests)
        self.registry = CollectorRegistry()
        self._define_http(self.registry)
        self._define_models(self.registry)
        self._define_kinds(self.registry)
        self._define_jobs(self.registry)
        self._define_streams(self.registry)
        for trigger in RELOAD_TRIGGERS:
            self.model_reloads.labels(trigger=trigger)

    def _define_http(self, r: CollectorRegistry) -> None:
        self.requests = Counter("emotion_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "emotion_request_duration_seconds",
            "End-to-end request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "emotion_requests_in_flight",
            "Requests being handled (health checks and scrapes aside)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.receiving_gauge = Gauge(
            "emotion_requests_receiving",
            "Requests whose body is still arriving (not yet in flight)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter("emotion_requests_rejected_total", "Requests shed with 503 over capacity", registry=r)

    def _define_models(self, r: CollectorRegistry) -> None:
        """Model calls, loads, faces and videos."""
        self.inference = Histogram(
            "emotion_inference_duration_seconds",
            "Model call latency per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "emotion_inference_batch_rows",
            "Rows per model call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.mirror_passes = Counter(
            "emotion_mirror_pass_faces_total",
            "Faces scored again as their mirror image because the first pass was unsure (a mirror TTA margin under 1)",
            ["model"],
            registry=r,
        )
        self.gate_faces = Counter(
            "emotion_gate_faces_total",
            "Faces a model with a gate scored, by who answered: its gate member alone (gate) or the whole ensemble",
            ["model", "answered_by"],
            registry=r,
        )
        self.faces = Counter("emotion_faces_detected_total", "Faces found by the detector", registry=r)
        self.model_loads = Counter("emotion_model_loads_total", "Successful model loads", ["model"], registry=r)
        self.model_load_failures = Counter(
            "emotion_model_load_failures_total", "Failed model loads", ["model"], registry=r
        )
        self.models_loaded = Gauge(
            "emotion_models_loaded",
            "Models currently loaded (in all processes)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.video_frames_decoded = Counter("emotion_video_frames_decoded_total", "Video frames decoded", registry=r)
        self.video_frames_analyzed = Counter("emotion_video_frames_analyzed_total", "Video frames analysed", registry=r)
        self.video_frames_unreadable = Counter(
            "emotion_video_frames_unreadable_total", "Video frames that could not be decoded (read past)", registry=r
        )
        self.video_detection = Counter(
            "emotion_video_detection_total",
            "How videos' sampled frames were searched for faces, by step: whole-frame passes run and put off over a "
            "still picture, regions searched around tracks, tracks carried forward unsearched",
            ["step"],
            registry=r,
        )
        for step in VIDEO_DETECTION_STEPS:
            self.video_detection.labels(step)
        self.video_seconds = Histogram(
            "emotion_video_processing_seconds",
            "Time to process one video",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def _define_kinds(self, r: CollectorRegistry) -> None:
        """Other model kinds, and the store as the registry sees it."""
        self.feature_rows = Counter(
            "emotion_feature_rows_total", "Feature vectors classified (/predict/features)", ["model"], registry=r
        )
        self.attribute_predictions = Counter(
            "emotion_attribute_predictions_total", "Frames or images scored by attribute models", ["model"], registry=r
        )
        self.attributes_present = Counter(
            "emotion_attributes_present_total",
            "Predictions in which an attribute was over its threshold",
            ["model", "attribute"],
            registry=r,
        )
        self.model_reloads = Counter(
            "emotion_model_reloads_total", "Rescans of the model store", ["trigger"], registry=r
        )
        self.store_versions = Gauge(
            "emotion_store_model_versions", "Model versions in the store", registry=r, multiprocess_mode="livemax"
        )

    def _define_jobs(self, r: CollectorRegistry) -> None:
        """Background jobs (service/jobs): the API and every worker export these for the jobs they see."""
        # every API process reads the same store: the last any of them read
        seen = "livemostrecent"
        self.job_queue_depth = Gauge(
            "emotion_job_queue_depth", "Jobs waiting for a worker", registry=r, multiprocess_mode=seen
        )
        self.jobs = Gauge("emotion_jobs", "Jobs known, by status", ["status"], registry=r, multiprocess_mode=seen)
        self.jobs_finished = Counter(
            "emotion_jobs_finished_total", "Jobs that reached a final status", ["status"], registry=r
        )
        self.job_duration = Histogram(
            "emotion_job_duration_seconds",
            "Time from a job's start to its end",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.job_workers = Gauge("emotion_job_workers", "Workers seen alive", registry=r, multiprocess_mode="livemax")

    def _define_streams(self, r: CollectorRegistry) -> None:
        """Live sessions on ``WS /stream``: sessions, frames by outcome, time per analysed frame, how sessions end."""
        self.stream_sessions = Gauge(
            "emotion_stream_sessions_active", "Live WS /stream sessions", registry=r, multiprocess_mode="livesum"
        )
        self.stream_frames = Counter(
            "emotion_stream_frames_total", "Live stream frames, by what became of them", ["outcome"], registry=r
        )
        self.stream_frame_seconds = Histogram(
            "emotion_stream_frame_seconds",
            "Server time per analysed live stream frame (decode to answer)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_closed = Counter(
            "emotion_stream_sessions_total", "Live sessions ended, by close code", ["close"], registry=r
        )
        for outcome in STREAM_OUTCOMES:
            self.stream_frames.labels(outcome=outcome)
        for code in STREAM_CLOSE_CODES:
            self.stream_closed.labels(close=code)

    def exposition(self) -> bytes:
        """Every series in Prometheus' text format: this process's, or with several server processes
        (``MULTIPROCESS_DIR`` set) the sums over all of them, after dropping the gauges of processes that ended."""
        folder = os.environ.get(MULTIPROCESS_DIR)
        if not folder:
            return generate_latest(self.registry)
        forget_ended(folder)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, folder)
        return generate_latest(merged)

    def known_routes(self, routes: Iterable[tuple[str, str, int]]) -> None:
        """Zero series for each ``(method, route template, success status)`` the app serves."""
        for method, route, status in routes:
            self.requests.labels(method=method, route=route, status=str(status))
            self.latency.labels(route=route)

    def known_models(self, models: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Zero series for each model version (``name:version`` and its labels) whatever its kind, so every per-model
        panel has its series before the first load or call (a face model's feature and attribute counters stay 0)."""
        per_model = (
            self.model_loads,
            self.model_load_failures,
            self.inference,
            self.batch_size,
            self.mirror_passes,
            self.feature_rows,
            self.attribute_predictions,
        )
        for model, labels in models:
            for metric in per_model:
                metric.labels(model=model)
            for label in labels:
                self.attributes_present.labels(model=model, attribute=label)
            for answered_by in ("gate", "ensemble"):
                self.gate_faces.labels(model=model, answered_by=answered_by)

    def known_job_statuses(self, statuses: Iterable[str], final: Iterable[str]) -> None:
        """Zero series before the first observation: ``jobs`` for every status (the first scrape can come before
        housekeeping's first count) and ``jobs_finished`` for each final one."""
        for status in statuses:
            self.jobs.labels(status=status)
        for status in final:
            self.jobs_finished.labels(status=status)

    def inference_observer(self, model: str) -> Callable[[int, float], None]:
        latency, rows = self.inference.labels(model=model), self.batch_size.labels(model=model)

        def observe(n: int, seconds: float) -> None:
            latency.observe(seconds)
            rows.observe(n)

        return observe

    def mirror_pass_counter(self, model: str) -> Callable[[int], None]:
        """Counts the faces each of ``model``'s second, mirror passes takes (``Predictor.on_mirror_pass``)."""
        return self.mirror_passes.labels(model=model).inc

    def gate_counter(self, model: str) -> Callable[[int, int], None]:
        """Counts the faces ``model``'s gate answered and those it passed to the whole ensemble
        (``Predictor.on_gate``: faces in the call, answered by the gate)."""
        gate, ensemble = (self.gate_faces.labels(model=model, answered_by=a) for a in ("gate", "ensemble"))

        def count(n: int, answered: int) -> None:
            gate.inc(answered)
            ensemble.inc(n - answered)

        return count

    def observe_video(self, result: VideoResult, seconds: float) -> None:
        """One analysed video: frames decoded, unreadable and analysed, how they were searched, faces classified, and
        the time it took."""
        self.video_frames_decoded.inc(result.frames_decoded)
        self.video_frames_unreadable.inc(result.frames_unreadable)
        self.video_frames_analyzed.inc(result.frames_analyzed)
        for step in VIDEO_DETECTION_STEPS:
            self.video_detection.labels(step).inc(result.detection.get(step, 0))
        self.faces.inc(result.faces)
        self.video_seconds.observe(seconds)

    def observe_job_finished(self, status: str, seconds: float | None = None) -> None:
        """A job reached a final status here (where it ran, or the API for a cancellation); ``seconds`` from its
        start to its end, for jobs that ran."""
        self.jobs_finished.labels(status=status).inc()
        if seconds is not None:
            self.job_duration.observe(seconds)

    def observe_jobs(self, counts: Mapping[str, int], workers: int) -> None:
        """The job store as the API sees it: jobs by status (every status, zeros included), the queued ones as the
        queue depth, and the workers seen alive."""
        for status, n in counts.items():
            self.jobs.labels(status=status).set(n)
        self.job_queue_depth.set(counts.get("queued", 0))
        self.job_workers.set(workers)

    def observe_features(self, model: str, rows: int) -> None:
        """Feature rows classified by ``model`` (its ``name:version``)."""
        self.feature_rows.labels(model=model).inc(rows)

    def observe_attributes(self, model: str, labels: Sequence[str], present: np.ndarray) -> None:
        """``present``: ``N x K`` booleans, one row per scored frame: how many frames, and per attribute how often
        it was present (its share of frames over time shows drift in what the footage holds)."""
        self.attribute_predictions.labels(model=model).inc(len(present))
        for label, count in zip(labels, present.sum(axis=0).tolist(), strict=True):
            if count:
                self.attributes_present.labels(model=model, attribute=label).inc(count)

    def observe_reload(self, trigger: str, versions: int) -> None:
        """A rescan of the store (``api`` or ``periodic``) and how many versions it holds now."""
        self.model_reloads.labels(trigger=trigger).inc()
        self.store_versions.set(versions)

    def open_stream(self, max_sessions: int) -> bool:
        """A new live session takes a place, unless ``max_sessions`` are live (False: it must be refused)."""
        if self.streams >= max_sessions:
            return False
        self.streams += 1
        self.stream_sessions.inc()
        return True

    def close_stream(self, code: int) -> None:
        """A live session that held a place ended with ``code``."""
        self.streams -= 1
        self.stream_sessions.dec()
        self.stream_ended(code)

    def stream_ended(self, code: int) -> None:
        """A live session ended with ``code`` (one refused before it held a place counts here alone)."""
        self.stream_closed.labels(close=str(code)).inc()

    def observe_stream_frame(self, outcome: str, seconds: float | None = None, faces: int = 0) -> None:
        """A live stream frame's outcome (``STREAM_OUTCOMES``); an analysed one's server time and faces."""
        self.stream_frames.labels(outcome=outcome).inc()
        if seconds is not None:
            self.stream_frame_seconds.observe(seconds)
        if faces:
            self.faces.inc(faces)

    def take_place(self, receiving: bool) -> Place:
        """A request's place in the load gauges: receiving until its body is in (``receiving``), then in flight."""
        return Place(self, receiving)

    def _count(self, receiving: bool, step: int) -> None:
        if receiving:
            self.receiving += step
            self.receiving_gauge.inc(step)
        else:
            self.active += step
            self.in_flight.inc(step)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)


def forget_ended(folder: str) -> None:
    """Live gauges (in flight, sessions, models loaded) of server processes that are gone: a process that died
    mid-request would otherwise count its requests in flight for ever."""
    pids = {int(m[1]) for path in Path(folder).glob("gauge_live*.db") if (m := LIVE_GAUGE_FILE.fullmatch(path.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # alive, another user's
            pass


class Place:
    """One request's share of the load gauges: receiving until its body is in, then in flight; released once."""

    def __init__(self, metrics: Metrics, receiving: bool) -> None:
        self.metrics, self.receiving, self.held = metrics, receiving, True
        metrics._count(receiving, 1)

    def body_in(self) -> None:
        if self.held and self.receiving:
            self.metrics._count(True, -1)
            self.metrics._count(False, 1)
            self.receiving = False

    def release(self) -> None:
        if self.held:
            self.metrics._count(self.receiving, -1)
            self.held = False
