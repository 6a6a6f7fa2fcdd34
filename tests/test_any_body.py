"""No body breaks the error path: any bytes, any content type, any encoding, on every route that takes a body, gets a
4xx JSON answer with a reason, and the connection it came on stays usable. (Issue 19: bodies that are not UTF-8,
and JSON holding lone surrogates, used to answer 500 from /predict/features and drop the keep-alive connection.)"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.errors import printable
from service.config import Settings
from service.main import create_app
from tests.conftest import DEFAULT_MODEL, DEFAULT_VERSION, wait_ready
from tests.live import serve

APP = create_app(Settings(_env_file=None))
DOCUMENT = TestClient(APP).get("/openapi.json").json()
# Every operation whose document declares a request body, with its path parameters filled in.
BODY_ROUTES = sorted(
    path.replace("{name}", DEFAULT_MODEL).replace("{version}", DEFAULT_VERSION)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    if method == "post" and "requestBody" in operation
)
MULTIPART = "multipart/form-data; boundary=b"
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
# The bodies issue 19 names, and their neighbours: (name, body, content type or None for none sent).
NAMED_BODIES = [
    (
        "multipart image",
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + JPEG_HEAD + b"\r\n--b--\r\n",
        MULTIPART,
    ),
    ("jpeg as octet-stream", JPEG_HEAD + b"\xff" * 64, "application/octet-stream"),
    ("text/plain \\xff\\xfe", b"\xff\xfe", "text/plain"),
    ("no content type", b"\xff\xfe\x00", None),
    ("json lone surrogate value", b'{"features": "\\ud800"}', "application/json"),
    ("json lone surrogate in rows", b'[["\\ud800"]]', "application/json"),
    ("json lone surrogate key", b'{"\\ud800": 1}', "application/json"),
    ("json surrogate in a row", b'{"features": [["\\udfff", 1.0]]}', "application/json"),
    ("json not utf-8", b'{"features": "\xff"}', "application/json"),
    ("json latin-1 charset", b'{"features": [["\xe9"]]}', "application/json; charset=latin-1"),
    ("json cut off", b'{"features": [[1.0, ', "application/json"),
    ("json nested deep", b"[" * 100_000, "application/json"),
    ("urlencoded", b"file=%ff%fe&features=%ed%a0%80", "application/x-www-form-urlencoded"),
    (
        "multipart cut off",
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + JPEG_HEAD,
        MULTIPART,
    ),
    ("multipart without boundary", b"--b\r\n\r\n--b--\r\n", "multipart/form-data"),
    (
        "multipart non-utf-8 names",
        b'--b\r\nContent-Disposition: form-data; name="\xff"; filename="\xfe.jpg"\r\n\r\n\xff\r\n--b--\r\n',
        MULTIPART,
    ),
]


@pytest.fixture(scope="module")
def api():
    with TestClient(APP, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def assert_clear_4xx(response, route: str) -> None:
    """A client error, as JSON, whose body says why in the route's own error shape."""
    assert 400 <= response.status_code < 500, f"{route}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    body = response.json()
    key = "error" if route.startswith("/v2") else "detail"
    assert set(body) == {key} and body[key], body


def test_every_body_route_is_covered():
    assert set(BODY_ROUTES) == {
        "/jobs/video",
        "/predict/attributes",
        "/predict/face",
        "/predict/features",
        "/predict/image",
        "/predict/video",
        f"/v2/models/{DEFAULT_MODEL}/infer",
        f"/v2/models/{DEFAULT_MODEL}/versions/{DEFAULT_VERSION}/infer",
    }


@pytest.mark.parametrize(("name", "body", "content_type"), NAMED_BODIES, ids=[n for n, _, _ in NAMED_BODIES])
@pytest.mark.parametrize("route", BODY_ROUTES)
def test_named_bodies_get_a_4xx_with_a_reason(api, route, name, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_clear_4xx(api.post(route, content=body, headers=headers), route)


CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-16",
        "application/vnd.api+json",
        "application/octet-stream",
        "image/jpeg",
        "text/plain",
        "text/plain; charset=utf-8",
        MULTIPART,
        "multipart/form-data; boundary=",
        "application/x-www-form-urlencoded",
        "video/mp4",
    ]
)
# Strings with lone surrogates, written as JSON escapes (json.dumps escapes them), in the places a body holds them.
SURROGATE_TEXT = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), min_size=1)
JSON_WITH_SURROGATES = st.one_of(
    SURROGATE_TEXT.map(lambda s: json.dumps({"features": s})),
    SURROGATE_TEXT.map(lambda s: json.dumps({s: [[1.0]]})),
    SURROGATE_TEXT.map(lambda s: json.dumps({"features": [[s, 1.0]]})),
    SURROGATE_TEXT.map(lambda s: json.dumps({"inputs": [{"name": s, "shape": [1], "datatype": s, "data": [s]}]})),
).map(str.encode)
BODIES = st.one_of(st.binary(max_size=2048), JSON_WITH_SURROGATES, st.text().map(lambda s: s.encode("utf-16")))


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(BODY_ROUTES), body=BODIES, content_type=CONTENT_TYPES)
def test_generated_bodies_get_a_4xx_with_a_reason(api, route, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_clear_4xx(api.post(route, content=body, headers=headers), route)


def test_features_answers_why_for_each_issue_body(api):
    """What /predict/features says to each body issue 19 names (a 500 before)."""
    for body, content_type, status, fragment in [
        (b"\xff\xfe", "text/plain", 415, "Content-Type: application/json"),
        (JPEG_HEAD, "application/octet-stream", 415, "'application/octet-stream'"),
        (b'{"features": "\\ud800"}', "application/json", 422, "valid list"),
        (b'{"\\ud800": 1}', "application/json", 422, "unicode"),
        (b'{"features": [["\\ud800"]]}', "application/json", 422, "unicode string"),
        (b'{"features": "\xff"}', "application/json", 422, "codec can't decode byte 0xff"),
    ]:
        response = api.post("/predict/features", content=body, headers={"Content-Type": content_type})
        assert response.status_code == status, (body, response.text)
        assert fragment in json.dumps(response.json()["detail"]), (body, response.text)


def test_validation_errors_never_echo_the_input(api):
    body = b'{"features": "' + b"x" * 5000 + b'"}'
    response = api.post("/predict/features", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert set(error) == {"type", "loc", "msg"} and error["loc"] == ["body", "features"]
    assert "xxxx" not in response.text


@pytest.mark.parametrize("route", ["/predict/image", "/predict/video", "/jobs/video"])
def test_a_multipart_body_cut_off_before_its_closing_boundary_is_named_as_such(api, route):
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n' + JPEG_HEAD * 100
    for cut in (part, part + b"\r\n--b", b"--b\r\nContent-Dispo"):
        response = api.post(route, content=cut, headers={"Content-Type": MULTIPART})
        assert response.status_code == 422 and "cut off" in response.json()["detail"], response.text
    other = b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n'
    response = api.post(route, content=other, headers={"Content-Type": MULTIPART})
    assert response.status_code == 422 and "no field 'file'" in response.json()["detail"]


@pytest.mark.parametrize("route", ["/predict/video", "/jobs/video"])
def test_a_video_route_sent_no_form_says_to_send_one(api, route):
    response = api.post(route, content=b"\x00\x00\x00\x18ftypmp42", headers={"Content-Type": "video/mp4"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_printable_escapes_lone_surrogates_and_keeps_the_rest():
    assert printable({"a\ud800": ["\udfff", 1, None, 2.5, ("é",)]}) == {"a\\ud800": ["\\udfff", 1, None, 2.5, ["é"]]}
    json.dumps(printable("\ud800")).encode("utf-8")


# --- on a real socket: the connection stays open after each refusal --------------------------------------------


@pytest.fixture(scope="module")
def live_url():
    with serve() as url:
        yield url


def test_keep_alive_connection_survives_every_issue_body(live_url):
    """Each body on one keep-alive connection, each refusal followed by a request on that same socket: a 500 from
    an exception used to close it."""
    parts = urlsplit(live_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.connect()
    sock = connection.sock
    for name, body, content_type in NAMED_BODIES:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request("POST", "/predict/features", body=body, headers=headers)
        refused = connection.getresponse()
        text = refused.read()
        assert 400 <= refused.status < 500, (name, refused.status, text[:300])
        assert json.loads(text)["detail"], name
        connection.request("GET", "/health/live")
        alive = connection.getresponse()
        assert alive.status == 200 and json.loads(alive.read())["status"] == "ok", name
        assert connection.sock is sock, f"{name}: the server closed the connection"
    connection.close()
