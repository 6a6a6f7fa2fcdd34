"""Schemathesis over every operation that takes a body, with bodies its document does not describe: raw binary
(``application/octet-stream``) and text (``text/plain``) beside the documented ones. What a client may send by
mistake must get a documented 4xx in the route's own error shape, never a 500. (Issue 19: schemathesis only ever
sent the documented media types, and missed the 500 that a non-UTF-8 body caused.)"""

from __future__ import annotations

import copy

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from tests.test_contract import APP, CHECKS, api, send  # noqa: F401  (api: the started app, a fixture)

EXTRA_BODIES = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "text/plain": {"schema": {"type": "string"}},
}


def with_any_body(document: dict) -> dict:
    """The served document with binary and text bodies added to every operation that takes a body (the answers
    stay as documented: a refusal of those must be one of them)."""
    document = copy.deepcopy(document)
    for operations in document["paths"].values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content")
            if content is not None:
                for media_type, spec in EXTRA_BODIES.items():
                    content.setdefault(media_type, spec)
    return document


SCHEMA = schemathesis.openapi.from_dict(with_any_body(TestClient(APP).get("/openapi.json").json()))
BODY_OPERATIONS = SCHEMA.include(method="POST")


@BODY_OPERATIONS.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_any_body_gets_a_documented_answer(case, api):  # noqa: F811
    response, headers = send(api, case)
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_every_body_operation_takes_binary_and_text():
    document = with_any_body(TestClient(APP).get("/openapi.json").json())
    bodies = {
        (method, path): set(op["requestBody"]["content"])
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    assert len(bodies) == 8
    assert all({"application/octet-stream", "text/plain"} <= types for types in bodies.values())
