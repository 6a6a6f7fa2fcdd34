"""The Open Inference Protocol v2 routes, driven by Triton's own client (``tritonclient[http]`` from PyPI) against
a live server, plus the protocol's error shapes, the JSON forms, the codec and the API key."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model_store import Predictor, Prepared, find
from service.api import oip
from service.config import Settings
from service.errors import InvalidInput
from tests.conftest import break_graphs, store_versions
from tests.live import serve

MODEL = "fer_emotion_cnn"  # the 48-px gray model: the shapes below are its input's
VERSIONS = store_versions(MODEL)
NEWEST, OLDEST = VERSIONS[0], VERSIONS[-1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture(scope="module")
def tc(server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def crops(fer_root) -> list[bytes]:
    """Real FER2013 val crops of three different labels."""
    return [sorted((fer_root / "val" / label).iterdir())[0].read_bytes() for label in ("happy", "sad", "surprise")]


def predict_face(server: str, data: bytes) -> dict:
    return httpx.post(
        f"{server}/predict/face", params={"model": MODEL}, content=data, headers={"Content-Type": "image/jpeg"}
    ).json()


def error_of(response: httpx.Response) -> str:
    """The protocol's error body: exactly ``{"error": "..."}`` as JSON."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


# --- tritonclient ----------------------------------------------------------------------------------------------


def test_tritonclient_sees_the_server_live_and_ready(tc):
    assert tc.is_server_live() and tc.is_server_ready()
    metadata = tc.get_server_metadata()
    assert metadata["name"] == "emotion-service" and "binary_tensor_data" in metadata["extensions"]
    assert tc.is_model_ready(MODEL) and tc.is_model_ready(MODEL, OLDEST)


def test_model_metadata_names_both_inputs_and_the_outputs(tc):
    metadata = tc.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == VERSIONS  # newest first
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 48, 48]},  # the ONNX graph's input name
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 7]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 7]},
        {"name": "valence_arousal", "datatype": "FP32", "shape": [-1, 2]},
    ]
    assert tc.get_model_metadata(MODEL, OLDEST)["inputs"] == metadata["inputs"]


def test_bytes_image_infer_equals_predict_face(tc, server, crops):
    image = triton.InferInput("image", [len(crops)], "BYTES")
    image.set_data_from_numpy(np.array(crops, dtype=np.object_))  # binary tensor data, tritonclient's default
    result = tc.infer(MODEL, [image])
    probabilities, va = result.as_numpy("probabilities"), result.as_numpy("valence_arousal")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 7) and va.shape == (3, 2)
    labels = find(MODEL).manifest.labels
    dominant = []
    for row, pair, data in zip(probabilities, va, crops, strict=True):
        expected = predict_face(server, data)
        np.testing.assert_allclose(row, [expected["emotions"][k] for k in labels], atol=1e-4)
        np.testing.assert_allclose(pair, [expected["valence"], expected["arousal"]], atol=1e-4)
        dominant.append(expected["dominant"])
    assert [labels[i] for i in probabilities.argmax(1)] == dominant and len(set(dominant)) == 3  # distinct rows
    assert result.get_response()["model_version"] == NEWEST


@pytest.fixture(scope="module")
def tensor(crops) -> np.ndarray:
    """The model's own input for three real faces (preprocessed as the service does, without the mirror rows)."""
    import cv2

    predictor = Predictor.load(find(MODEL), tta=False)
    faces = [cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR) for c in crops]
    return predictor.prepare(faces).x


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_tensor_infer_returns_the_model_outputs(tc, tensor, binary):
    raw = Predictor.load(find(MODEL, OLDEST), Settings(_env_file=None).backend, tta=False)  # what the server runs
    tensor_input = triton.InferInput("input", list(tensor.shape), "FP32")
    tensor_input.set_data_from_numpy(tensor, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("logits", "probabilities")]
    result = tc.infer(MODEL, [tensor_input], model_version=OLDEST, outputs=outputs, request_id="r1")
    logits = result.as_numpy("logits")
    assert logits.shape == (3, 7) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, raw.run(tensor)["logits"], atol=1e-5)
    expected = raw.postprocess(raw.run(tensor), Prepared(tensor, len(tensor)))  # calibrated, no mirror rows
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected.probabilities, atol=1e-6)
    response = result.get_response()
    assert response["model_version"] == OLDEST and response["id"] == "r1"
    assert [o["name"] for o in response["outputs"]] == ["logits", "probabilities"]  # only those asked for


def test_unknown_model_and_bad_shape_are_protocol_errors(tc, server, tensor):
    with pytest.raises(InferenceServerException) as info:
        tc.get_model_metadata("no-such-model")
    assert info.value.status() == "404" and info.value.message() == "unknown model 'no-such-model'"
    wrong = triton.InferInput("input", [3, 1, 24, 96], "FP32")
    wrong.set_data_from_numpy(tensor.reshape(3, 1, 24, 96))
    with pytest.raises(InferenceServerException) as info:
        tc.infer(MODEL, [wrong])
    assert info.value.status() == "400" and "the model takes [-1, 1, 48, 48]" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        tc.infer("no-such-model", [wrong])
    assert info.value.status() == "404"
    assert not tc.is_model_ready("no-such-model")


# --- the JSON forms and the errors, over plain HTTP --------------------------------------------------------------


def infer(server: str, body: dict, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{server}/v2/models/{model}/infer", json=body, timeout=60)


def test_base64_images_in_json_equal_the_binary_form(server, crops):
    data = [base64.b64encode(c).decode() for c in crops[:2]]
    response = infer(server, {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": data}]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 7] and len(outputs["probabilities"]["data"]) == 14
    expected = predict_face(server, crops[1])
    labels = find(MODEL).manifest.labels
    np.testing.assert_allclose(
        outputs["probabilities"]["data"][7:], [expected["emotions"][k] for k in labels], atol=1e-4
    )


@pytest.mark.parametrize(
    ("tensor_input", "fragment"),
    [
        ({"name": "input", "datatype": "FP32", "shape": [1, 1, 48, 48], "data": [0.0] * 100}, "holds 2304 elements"),
        ({"name": "input", "datatype": "FP64", "shape": [1, 1, 48, 48], "data": [0.0] * 2304}, "FP32 or BYTES"),
        ({"name": "input", "datatype": "FP32", "shape": [1, 1, 48, 48], "data": ["x"] * 2304}, "numbers only"),
        ({"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [[1.0, 2.0], [3.0]]}, "regular"),
        ({"name": "input", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}, "is FP32, not BYTES"),
        ({"name": "input", "datatype": "FP32", "shape": [65, 1, 48, 48], "data": [0.0] * 65 * 2304}, "1 to 64 rows"),
        ({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}, "must be base64"),
        (
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["R0lGODlh"]},
            "image 0: unsupported image format",
        ),
        ({"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}, "BYTES of shape [-1]"),
        ({"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1.0]}, "unknown input 'pixels'"),
        ({"name": "input", "datatype": "FP32", "shape": [1, 1, 48, 48], "data": [1e39] * 2304}, "NaN or infinite"),
    ],
)
def test_bad_inputs_are_400_with_the_reason(server, tensor_input, fragment):
    response = infer(server, {"inputs": [tensor_input]})
    assert response.status_code == 400 and fragment in error_of(response)


def test_bad_requests_are_400_with_the_reason(server, crops):
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(crops[0]).decode()]}
    cases = [
        ({"inputs": []}, "non-empty list"),
        ({"inputs": [image, image]}, "send one input"),
        ({"inputs": [image], "outputs": [{"name": "logits"}]}, "'logits' is not produced for input 'image'"),
        ({"inputs": [image], "outputs": [{"name": "scores"}]}, "unknown output 'scores'"),
        ({"inputs": [image], "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}, "classif"),
    ]
    for body, fragment in cases:
        response = infer(server, body)
        assert response.status_code == 400 and fragment in error_of(response), body
    junk = httpx.post(f"{server}/v2/models/{MODEL}/infer", content=b"\x00junk")
    assert junk.status_code == 400 and "not a JSON inference request" in error_of(junk)
    unknown = httpx.get(f"{server}/v2/models/no-such-model/versions/9/ready")
    assert unknown.status_code == 404 and error_of(unknown) == "unknown model 'no-such-model'"
    assert error_of(infer(server, {"inputs": [image]}, model="UPPER")) == "unknown model 'UPPER'"


def test_binary_request_with_json_outputs(server, crops):
    """The binary tensor data extension by hand: a length-prefixed BYTES input, outputs asked for as JSON."""
    raw = b"".join(struct.pack("<I", len(c)) + c for c in crops[:2])
    head = json.dumps({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities"}],
    }).encode()  # fmt: skip
    response = httpx.post(
        f"{server}/v2/models/{MODEL}/infer", content=head + raw, headers={oip.HEADER_LENGTH: str(len(head))}
    )
    assert response.status_code == 200 and oip.HEADER_LENGTH.lower() not in response.headers
    (output,) = response.json()["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [2, 7]
    head = head.replace(str(len(raw)).encode(), str(len(raw) - 5).encode())  # the last element cut short
    short = httpx.post(
        f"{server}/v2/models/{MODEL}/infer", content=head + raw[:-5], headers={oip.HEADER_LENGTH: str(len(head))}
    )
    assert short.status_code == 400 and "longer than the data sent" in error_of(short)


# --- codec, API key and unavailable models (in process) ----------------------------------------------------------


def test_parse_request_reads_binary_and_json_tensors():
    floats = np.arange(6, dtype="<f4")
    head = json.dumps({
        "id": "a",
        "parameters": {"binary_data_output": True},
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
            {"name": "b", "datatype": "BYTES", "shape": [2], "data": [["AAE="], ["/w=="]]},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }).encode()  # fmt: skip
    parsed = oip.parse_request(head + floats.tobytes(), str(len(head)))
    x, b = parsed.inputs
    assert x.shape == (2, 3) and np.array_equal(x.data, floats) and b.data == [b"\x00\x01", b"\xff"]
    assert parsed.id == "a" and parsed.binary_output and [(w.name, w.binary) for w in parsed.outputs] == [
        ("y", False), ("z", None)]  # fmt: skip
    body, headers = oip.encode_response(parsed, "m", "1", {"y": np.ones((1, 2)), "z": np.zeros((1, 1))})
    length = int(headers[oip.HEADER_LENGTH])
    response = json.loads(body[:length])
    assert response["outputs"][0]["data"] == [1.0, 1.0] and response["outputs"][1]["parameters"] == {
        "binary_data_size": 4}  # fmt: skip
    assert body[length:] == np.zeros(1, "<f4").tobytes() and response["id"] == "a"


@pytest.mark.parametrize(
    ("body", "header", "fragment"),
    [
        (b'{"inputs": []}', "99", "no larger than the body"),
        (b"[1]", None, "JSON object"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}',
         None, "does not fit"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None, "non-negative"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "no 'data'"),
        (b'{"id": 5, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', None, "'id'"),
        (b"[" * 100000, None, "not a JSON"),
    ],
)  # fmt: skip
def test_parse_request_refuses_malformed_bodies(body, header, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        oip.parse_request(body, header)


def test_api_key_guards_model_routes_with_protocol_errors(make_client):
    client = make_client(api_key="k")
    assert client.get("/v2/health/live").json() == {"live": True} and client.get("/v2").status_code == 200
    refused = client.get(f"/v2/models/{MODEL}")
    assert refused.status_code == 401 and error_of(refused).startswith("missing or invalid API key")
    assert client.get(f"/v2/models/{MODEL}", headers={"X-API-Key": "k"}).status_code == 200


def test_a_model_that_fails_to_load_is_not_ready_and_its_infer_is_503(store_copy, make_client, crops, default_entry):
    model = default_entry.manifest.name  # the one model store_copy holds
    break_graphs(next((store_copy / model).iterdir()))
    client = make_client(store_path=store_copy, ready=False)
    assert client.get("/v2/health/ready").status_code == 503
    ready = client.get(f"/v2/models/{model}/ready")
    assert ready.status_code == 503 and ready.json() == {"name": model, "ready": False}
    data = [base64.b64encode(crops[0]).decode()]
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": [{"name": "image", "datatype": "BYTES",
                                                                          "shape": [1], "data": data}]})  # fmt: skip
    assert response.status_code == 503 and "checksum mismatch" in error_of(response) and response.headers["retry-after"]


def test_a_clients_own_tensor_gets_no_mirror_pass_while_its_images_do(make_client, tensor, crops):
    """With ``EMOTION_TTA_MARGIN`` under 1, the model's own input comes back as the model's raw output (no mirror
    pass is added to a client's tensors), while images get the served answer, mirror pass included."""
    client = make_client(tta_margin=0.9)
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(tensor.shape), "data": tensor.ravel().tolist()}]
    }
    response = client.post(f"/v2/models/{MODEL}/versions/{NEWEST}/infer", json=body)
    assert response.status_code == 200, response.text
    logits = next(o for o in response.json()["outputs"] if o["name"] == "logits")
    raw = Predictor.load(find(MODEL, NEWEST), Settings(_env_file=None).backend, tta=False)
    expected = raw.run(tensor)["logits"]
    adaptive = Predictor.load(find(MODEL, NEWEST), Settings(_env_file=None).backend, tta_margin=0.9)
    assert (adaptive.margins(raw.run(tensor)) < 0.9).any()  # some rows would have taken the mirror pass
    np.testing.assert_allclose(np.reshape(logits["data"], logits["shape"]), expected, atol=1e-5)
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(crops[1]).decode()]}
    answer = client.post(f"/v2/models/{MODEL}/versions/{NEWEST}/infer", json={"inputs": [image]}).json()
    probs = next(o for o in answer["outputs"] if o["name"] == "probabilities")["data"]
    import cv2

    face = cv2.imdecode(np.frombuffer(crops[1], np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_allclose(probs, adaptive.predict([face]).probabilities[0], atol=1e-5)
