"""Dashboards have data from the first scrape: every series a Grafana expression names is present, with a sample, in
a fresh API's ``/metrics`` or a fresh worker's (labelled series start at zero for the labels known at start: routes,
models in the store, final job statuses, reload triggers). And scrapes and health checks are not load: they neither
count towards the in-flight limit nor get shed by it. (Issue 19: seven dashboard series were missing until their
first event; /health and /metrics took places in the in-flight limit.)"""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model_store import scan
from service.api.middleware import MetricsMiddleware
from service.config import Settings
from service.main import create_app
from service.metrics import Metrics
from tests.test_grafana import QUERIES, metric_names, promql

pytest_plugins = ("tests.jobs_support",)  # fixtures: redis_url, queue_name, workers


def samples(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets it has samples for (HELP/TYPE lines alone do not count)."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample.labels)
    return found


@pytest.fixture(scope="module")
def fresh_api() -> dict[str, list[dict[str, str]]]:
    """The API's first scrape, before any other request (no warm-up: no model loaded yet either)."""
    with TestClient(create_app(Settings(_env_file=None, warmup=False))) as client:
        return samples(client.get("/metrics").text)


@pytest.fixture(scope="module")
def store_models() -> list[str]:
    return [entry.manifest.key for entry in scan()[0] if not entry.manifest.kind.component]  # models, not parts


def test_every_dashboard_series_exists_in_a_fresh_api_or_worker(fresh_api, workers, tmp_path):
    pool = workers(tmp_path / "jobs")
    [proc] = pool.start(1)
    worker = samples(pool.metrics(proc))
    missing = {
        where: sorted(names - set(fresh_api) - set(worker))
        for where, expr in QUERIES
        if (names := metric_names(promql.parse(expr))) - set(fresh_api) - set(worker)
    }
    assert missing == {}
    assert {"status": "succeeded"} in worker["emotion_jobs_finished_total"]


def test_the_issue_series_start_at_zero_for_every_known_label(fresh_api, store_models):
    def labels(name: str, key: str) -> set[str]:
        return {s[key] for s in fresh_api.get(name, [])}

    for name in (
        "emotion_model_loads_total",
        "emotion_model_load_failures_total",
        "emotion_feature_rows_total",
        "emotion_attribute_predictions_total",
        "emotion_attributes_present_total",
        "emotion_inference_duration_seconds_count",
        "emotion_inference_batch_rows_count",
    ):
        assert labels(name, "model") == set(store_models), name
    assert labels("emotion_jobs_finished_total", "status") == {"succeeded", "failed", "cancelled"}
    assert labels("emotion_model_reloads_total", "trigger") == {"api", "periodic", "peer"}
    routes = labels("emotion_request_duration_seconds_count", "route")
    assert {"/predict/image", "/predict/features", "/jobs/video", "/v2/models/{name}/infer", "/docs"} <= routes
    assert {"method": "POST", "route": "/jobs/video", "status": "202"} in fresh_api["emotion_requests_total"]


def test_a_model_added_to_the_store_has_series_at_the_next_scrape(make_client, store_copy, default_entry):
    import shutil

    client = make_client(store_path=store_copy, warmup=False, ready=False)
    extra = store_copy / default_entry.manifest.name / "9.9.9"
    shutil.copytree(store_copy / default_entry.manifest.name / default_entry.manifest.version, extra)
    manifest = (
        (extra / "manifest.json")
        .read_text()
        .replace(f'"version": "{default_entry.manifest.version}"', '"version": "9.9.9"')
    )
    (extra / "manifest.json").write_text(manifest)
    assert client.post("/models/reload").status_code == 200
    loads = samples(client.get("/metrics").text)["emotion_model_loads_total"]
    assert {"model": f"{default_entry.manifest.name}:9.9.9"} in loads


# --- probes are not load ----------------------------------------------------------------------------------------


def held_requests(paths: list[str], max_in_flight: int = 1) -> tuple[list[int], int]:
    """The first path is held in flight while the others arrive: their statuses, and ``Metrics.active`` meanwhile."""
    gate, metrics = asyncio.Event(), Metrics()

    async def app(scope, receive, send):
        if scope["path"] == paths[0]:
            await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        middleware, statuses = MetricsMiddleware(app, metrics, max_in_flight=max_in_flight), []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def call(path: str) -> None:
            async def send(message):
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await middleware({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)

        held = asyncio.create_task(call(paths[0]))
        await asyncio.sleep(0.01)
        for path in paths[1:]:
            await call(path)
        active = metrics.active
        gate.set()
        await held
        return statuses, active

    return asyncio.run(scenario())


def test_a_held_scrape_or_health_check_takes_no_place_from_predictions():
    for probe in ("/metrics", "/health/ready", "/v2/health/live"):
        statuses, active = held_requests([probe, "/predict/face"])
        assert statuses == [200, 200] and active == 0, probe


def test_probes_answer_while_predictions_fill_every_place():
    statuses, active = held_requests(["/predict/face", "/health/live", "/metrics", "/v2/health/ready", "/models"])
    assert statuses == [200, 200, 200, 503, 200] and active == 1
