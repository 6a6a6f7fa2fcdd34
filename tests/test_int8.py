"""int8 weights narrowed to 7 bits where the CPU's int8 products saturate (``model_store.int8``)."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_store import Predictor, find, to_uint8_face
from model_store.int8 import cpu_flags, narrow_bytes, narrow_weights, narrowed, saturates, weight_bits
from model_store.runtime import OnnxRunner
from service.identity import FaceDescriber, load_graph
from tests.factories import broken_entry


def test_x86_without_vnni_saturates_and_other_cpus_do_not():
    assert saturates("x86_64", frozenset({"sse4_2", "avx2", "fma"}))
    assert saturates("x86_64", frozenset({"avx2", "avx512f", "avx512bw"}))  # AVX-512 without VNNI: Skylake-SP
    for exact in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert not saturates("x86_64", frozenset({"avx2", exact}))
    assert not saturates("aarch64", frozenset())
    assert not saturates("arm64")


def test_cpu_flags_read_linux_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") is None


def test_the_setting_picks_the_bits():
    assert narrowed("7") and not narrowed("8")
    assert narrowed("auto") == saturates()
    with pytest.raises(ValueError, match="auto, 7, 8"):
        narrowed("6")


def qdq_conv(weights: np.ndarray, bias: np.ndarray):
    """x (float) -> Q/DQ uint8 -> Conv with int8 per-channel weights and an int32 bias, as onnxruntime's
    quantize_static writes it."""
    w_scale = np.abs(weights).max(axis=(1, 2, 3)) / 127
    x_scale = np.float32(1 / 255)
    w_q = np.round(weights / w_scale[:, None, None, None]).astype(np.int8)
    b_q = np.round(bias / (x_scale * w_scale)).astype(np.int32)
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(len(w_q), np.int8), "w_zero"),
        numpy_helper.from_array(b_q, "b_q"),
        numpy_helper.from_array((x_scale * w_scale).astype(np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(len(b_q), np.int32), "b_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b"], axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], kernel_shape=[3, 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_narrowing_halves_weights_and_keeps_what_they_compute():
    rng = np.random.default_rng(0)
    weights, bias = rng.normal(0, 0.5, (4, 8, 3, 3)).astype(np.float32), rng.normal(0, 0.3, 4).astype(np.float32)
    model, x = qdq_conv(weights, bias), rng.random((1, 8, 6, 6)).astype(np.float32)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    exact = run(model, x)
    assert narrow_weights(model) == 2
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.abs(after["w_q"]).max() == 64 and np.abs(before["w_q"]).max() == 127
    np.testing.assert_allclose(after["w_scale"], 2 * before["w_scale"])
    np.testing.assert_allclose(after["b_scale"], 2 * before["b_scale"])  # still the input's scale x the weights'
    dequantized = after["w_q"] * after["w_scale"][:, None, None, None]
    assert np.abs(dequantized - weights).max() <= after["w_scale"].max()  # within one 7-bit step
    kept = before["b_q"] * before["b_scale"]
    np.testing.assert_allclose(after["b_q"] * after["b_scale"], kept, atol=after["b_scale"].max())
    np.testing.assert_allclose(run(model, x), exact, atol=0.05 * np.abs(exact).max())
    assert narrow_weights(model) == 0, "weights already in 7 bits are not halved again"


def test_the_weight_bits_are_read_off_the_graph(tmp_path):
    """A graph quantised with --reduce-range (weights already in 7 bits) is served and reported as 7 bits, narrowed
    or not; the stored file is what its session reads."""
    rng = np.random.default_rng(1)
    model = qdq_conv(rng.normal(0, 0.5, (4, 8, 3, 3)).astype(np.float32), rng.normal(0, 0.3, 4).astype(np.float32))
    assert weight_bits(model) == 8
    narrow_weights(model)
    assert weight_bits(model) == 7
    float_graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "relu",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
    )
    assert weight_bits(float_graph) is None
    path = tmp_path / "model.int8.onnx"
    path.write_bytes(model.SerializeToString())
    manifest = find("fer_emotion_cnn").manifest.model_copy(update={"outputs": ["y"]})
    runner = OnnxRunner(path, manifest, "cpu", narrow=True)
    assert runner.weight_bits == 7


@pytest.fixture(scope="module")
def fer_val_faces(fer_root) -> tuple[np.ndarray, np.ndarray]:
    fast = find("fer_emotion_cnn")
    spec = fast.manifest.input
    paths = sorted((fer_root / "val").glob("*/*.jpg"))[::12][:300]
    return np.stack([to_uint8_face(cv2.imread(str(p)), spec) for p in paths]), np.zeros(0)


def test_the_shipped_int8_graph_narrowed_answers_as_its_fp32_graph(fer_val_faces):
    """7-bit weights compute exactly on every CPU; their labels must stay those of the fp32 graph."""
    faces, _ = fer_val_faces
    fast = find("fer_emotion_cnn")
    narrow = Predictor.load(fast, "onnx-int8", int8_weights="7", tta=False)
    full = Predictor.load(fast, "onnx", tta=False)
    assert (
        narrow.runner.weight_bits == 7 and Predictor.load(fast, "onnx-int8", int8_weights="8").runner.weight_bits == 8
    )
    labels = narrow.predict_faces(faces).logits.argmax(1), full.predict_faces(faces).logits.argmax(1)
    assert np.mean(labels[0] == labels[1]) >= 0.95


def test_a_routed_gated_ensemble_narrows_every_session():
    default = find("emotion_transfer")
    p = Predictor.load(default, "onnx-int8", int8_weights="7")
    assert p.runner.weight_bits == 7 and p.runner.gated
    x = np.zeros((2, *default.manifest.input.tensor_shape), np.float32)
    assert np.isfinite(p.run(x)[default.manifest.outputs[0]]).all()


def test_the_face_descriptor_narrows_its_graph():
    _, graph = load_graph()
    narrowed_graph = onnx.load_from_string(narrow_bytes(graph))
    weights = [numpy_helper.to_array(i) for i in narrowed_graph.graph.initializer]
    assert max(np.abs(w).max() for w in weights if w.dtype == np.int8) <= 64
    chips = np.full((2, 150, 150, 3), 127, np.uint8)
    assert FaceDescriber(int8_weights="7").describe(chips).shape == (2, 128)


def test_models_lists_the_weight_bits_and_the_setting_is_checked(make_client):
    listed = {m["name"]: m for m in make_client(int8_weights="7").get("/models").json()["models"]}
    assert listed["emotion_transfer"]["int8_weight_bits"] == 7
    listed = {m["name"]: m for m in make_client(int8_weights="8").get("/models").json()["models"]}
    assert listed["fer_emotion_cnn"]["int8_weight_bits"] == 8
    listed = {m["name"]: m for m in make_client(backend="onnx").get("/models").json()["models"]}
    assert listed["fer_emotion_cnn"]["int8_weight_bits"] is None
    with pytest.raises(ValueError, match="int8_weights"):
        make_client(int8_weights="6")


def test_the_int8_weights_benchmark_writes_its_table(tmp_path, monkeypatch, fer_val_faces):
    from benchmarks import int8_weights

    faces, _ = fer_val_faces
    photos = [
        (cv2.cvtColor(cv2.resize(f, (96, 96)), cv2.COLOR_GRAY2BGR), (8, 8, 80, 80), i % 7)
        for i, f in enumerate(faces[:14])
    ]
    monkeypatch.setattr(int8_weights, "photo_faces", lambda labels: photos)
    args = int8_weights.get_args_parser().parse_args(
        ["--models", "fer_emotion_cnn", "--val-limit", "40", "--output", str(tmp_path)]
    )
    results = int8_weights.main(args)
    rows = results["models"]["fer_emotion_cnn"]
    assert set(rows) == set(int8_weights.VARIANTS) and results["saturates"] == saturates()
    assert set(rows["fp32"]) == {"photos", "rafdb_val", "fer2013_val"}
    assert 0.0 <= rows["int8, 7-bit weights"]["fer2013_val"]["accuracy"] <= 1.0
    assert (tmp_path / "int8_weights.json").is_file() and (tmp_path / "int8_weights.png").is_file()


def test_an_unreadable_graph_narrowed_at_load_fails_its_model_with_a_clear_message(store_copy, make_client):
    broken_entry(store_copy, ".int8.onnx")
    client = make_client(store_path=store_copy, int8_weights="7")
    response = client.post("/predict/face?model=broken", files={"file": ("x.jpg", b"\xff\xd8\xff", "image/jpeg")})
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "broken:" in detail and "model.int8.onnx is not a readable ONNX graph" in detail
    assert str(store_copy) not in detail


def test_the_services_sessions_sleep_between_calls():
    """Every session the service makes (``session_options``): pool threads sleep instead of spin-waiting, which
    burnt the cores the HTTP side and the other sessions need; one thread across operators."""
    from model_store.runtime import session_options

    options = session_options(2)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
