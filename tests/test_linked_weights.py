"""One copy of the weights per store entry: the ONNX graph and the torch program read ``model.safetensors``."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from model_store import Predictor, StoreError, find, publish
from model_store.linked import open_program, program_links, tensor_ranges
from tests.factories import FER_LABELS, manifest
from training.artifacts import write_artifacts
from training.models import create_model
from training.runs import example_input

SPEC = {"height": 48, "width": 48, "channels": 1, "mean": [0.5], "std": [0.25]}


@pytest.fixture(scope="module")
def linked_store(tmp_path_factory):
    """A small emotion_cnn with trained-looking batch-norm statistics, published through ``write_artifacts``."""
    torch.manual_seed(0)
    model = create_model("emotion_cnn", 7, width=4, hidden=16).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    root = tmp_path_factory.mktemp("linked")
    m = manifest(input=SPEC, architecture_args={"width": 4, "hidden": 16})
    artifacts, diff = write_artifacts(model, m.input, ["logits"], root / "export", {"labels": ",".join(FER_LABELS)})
    entry = publish(m, artifacts, root / "store")
    return model, entry, diff


def test_the_graph_and_the_program_hold_no_weights_of_their_own(linked_store):
    model, entry, diff = linked_store
    import onnx

    graph = onnx.load(str(entry.path("onnx")), load_external_data=False).graph
    external = [i for i in graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    inline = [i for i in graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL]
    assert {i.name for i in external} == {n for n, p in model.named_parameters()} | {
        n for n, _ in model.named_buffers() if not n.endswith("num_batches_tracked")
    }
    assert sum(len(i.raw_data) for i in inline) < 1024 and diff < 1e-5
    with zipfile.ZipFile(entry.path("torch_program")) as archive:
        left_out = set(program_links(archive)) - set(archive.namelist())
    assert len(left_out) == len(model.state_dict())  # every weight, buffers included, lives in the safetensors


@pytest.mark.parametrize("folder", ["linked", "shipped"])
def test_every_convolution_has_a_constant_bias_or_none(linked_store, folder):
    """onnxruntime folds a batch norm into a convolution only when the bias is constant; the exporter's run-time
    zero bias (Shape/Expand/CastLike) made the shipped graph about 40% slower per face until it was dropped."""
    import onnx

    path = linked_store[1].path("onnx") if folder == "linked" else find("fer_emotion_cnn", "1.3.0").path("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and all(len(node.input) == 2 or node.input[2] in constants for node in convs)
    assert not [node.op_type for node in graph.node if node.op_type in {"Expand", "CastLike"}]


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_both_backends_give_the_torch_model_outputs(linked_store, backend):
    model, entry, _ = linked_store
    x = example_input(entry.manifest.input, 4, seed=3)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = Predictor.load(entry, backend=backend).run(x.numpy())["logits"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_changed_weights_file_stops_either_backend(linked_store, tmp_path, backend):
    import shutil

    _, entry, _ = linked_store
    folder = tmp_path / "m" / "1.0.0"
    shutil.copytree(entry.folder, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"checksum mismatch for model\.safetensors"):
        Predictor.load(find("m", root=tmp_path), backend=backend)


def test_a_program_without_its_weights_file_is_refused_by_name(linked_store, tmp_path):
    _, entry, _ = linked_store
    with pytest.raises(ValueError, match=r"reads its weights from model\.safetensors"):
        open_program(entry.path("torch_program"), None)
    other = tmp_path / "other.safetensors"
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(other))
    assert list(tensor_ranges(other)) == ["x"]
    with pytest.raises(ValueError, match="which does not hold them"):
        open_program(entry.path("torch_program"), other)


def test_float16_weights_are_linked_through_an_upcast(tmp_path):
    """``export_slim --half``: kernels stored once in float16, read by the graph through a Cast that onnxruntime
    folds; the served outputs are the float16-rounded model's, close to the float32 one's."""
    import onnx
    from onnx import numpy_helper
    from safetensors.torch import load_file

    from training.export_onnx import HALF_SUFFIX, export, parity
    from training.export_slim import save_slim

    torch.manual_seed(0)
    model = create_model("emotion_cnn", 7, width=4, hidden=16).eval()
    save_slim(model, tmp_path / "full.safetensors", {})
    weights = tmp_path / "model.safetensors"
    save_slim(model, weights, {}, half=True)
    stored = load_file(weights)
    assert weights.stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size
    assert {n for n, t in stored.items() if t.dtype == torch.float16} == {
        n for n, t in model.state_dict().items() if t.ndim >= 2
    }
    rounded = create_model("emotion_cnn", 7, width=4, hidden=16).eval()
    rounded.load_state_dict(stored)
    spec = manifest(input=SPEC).input
    path = export(rounded, example_input(spec, 2), ["logits"], tmp_path / "model.onnx", weights=weights)
    graph = onnx.load(str(path), load_external_data=False).graph
    halves = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(i.data_location == onnx.TensorProto.EXTERNAL for i in halves)
    assert {i.name.removesuffix(HALF_SUFFIX) for i in halves} == {n for n, t in stored.items() if t.ndim >= 2}
    inline = [i for i in graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL]
    assert sum(len(numpy_helper.to_array(i).tobytes()) for i in inline) < 1024
    x = example_input(spec, 5, seed=1)
    assert parity(rounded, path, x) < 1e-5
    with torch.inference_mode():
        assert 0 < float((rounded(x) - model(x)).abs().max()) < 1e-2
        expected = rounded(x).numpy()
    m = manifest(input=SPEC, architecture_args={"width": 4, "hidden": 16})
    entry = publish(m, {"weights": weights, "onnx": path}, tmp_path / "store")
    got = Predictor.load(entry, backend="onnx").run(x.numpy())["logits"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_half_refuses_a_weight_beyond_float16s_range():
    from training.export_slim import half_state

    small = {"w": torch.ones(2, 2), "var": torch.full((2,), 1e-9)}
    assert half_state(small)["w"].dtype == torch.float16 and half_state(small)["var"].dtype == torch.float32
    with pytest.raises(ValueError, match="beyond float16's range; export it without --half"):
        half_state({"w": torch.full((2, 2), 1e5)})
