"""Route graphs: a colour-routed ensemble's graph cut per kind of face gives the one graph's answers, without the
idle branch's nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from model_store import Predictor, find
from model_store.preprocess import normalize, prepare_batch
from model_store.routing import find_routes, gray_rows, route_graph
from tests.test_ensemble import COLOUR_IN
from training.models.ensemble import Ensemble


def mixed_rows(n: int = 12) -> np.ndarray:
    """Gray rows (equal channels) and colour rows interleaved, normalised as ``COLOUR_IN`` says."""
    rng = np.random.default_rng(0)
    x = rng.random((n, 3, 8, 8), dtype=np.float32)
    x[::2] = x[::2, :1]
    return (x - 0.5) / 0.25


@pytest.fixture(scope="module")
def routed_graph(tmp_path_factory):
    from training.export_onnx import export

    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        for _ in range(3)
    ]
    model = Ensemble(nets, [1.0, 0.8, 1.2], faces=["all", "gray", "colour"], input=COLOUR_IN).eval()
    return export(model, torch.from_numpy(mixed_rows(2)), ["logits"], tmp_path_factory.mktemp("r") / "routed.onnx")


def test_each_route_graph_gives_the_one_graphs_answers_without_row_selection(routed_graph):
    model = onnx.load(str(routed_graph))
    routes = find_routes(model.graph)
    assert routes is not None and routes.spread == pytest.approx(2 / 255)
    whole = ort.InferenceSession(str(routed_graph), providers=["CPUExecutionProvider"])
    x = mixed_rows()
    gray = gray_rows(x, np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32), routes.spread)
    assert gray.tolist() == [True, False] * 6
    expected = whole.run(None, {"input": x})[0]
    for kind, rows in ((True, gray), (False, ~gray)):
        cut = route_graph(model, routes, kind)
        ops = {n.op_type for n in cut.graph.node}
        assert not ops & {"NonZero", "ScatterND", "Less"}, ops
        assert len(cut.graph.node) < len(model.graph.node)
        session = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"input": x[rows]})[0], expected[rows], atol=1e-6)


def test_an_unrouted_graph_has_no_routes(tmp_path):
    from training.export_onnx import export

    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    path = export(net, torch.from_numpy(mixed_rows(2)), ["logits"], tmp_path / "plain.onnx")
    assert find_routes(onnx.load(str(path)).graph) is None


@pytest.mark.parametrize("backend", ["onnx-int8", "onnx"])
def test_the_default_served_per_route_answers_as_its_one_graph(backend, monkeypatch):
    """The shipped routed entry: a batch mixing gray and colour faces (and each kind alone) gets the same outputs
    from the route graphs as from the published graph, bit for bit."""
    from model_store import runtime

    entry = find("emotion_transfer", "1.1.0")
    routed = Predictor.load(entry, backend)
    assert routed.runner.routes is not None
    monkeypatch.setattr(runtime, "routed_graphs", lambda path: None)
    whole = Predictor.load(entry, backend)
    assert whole.runner.routes is None
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (6, 150, 150, 3), dtype=np.uint8)
    faces[::3] = faces[::3, :, :, :1]  # gray rows
    x = routed.prepare_faces(faces).x
    for batch in (x, x[:1], x[1:3], x[::3]):
        np.testing.assert_array_equal(routed.run(batch)["logits"], whole.run(batch)["logits"])


def test_normalising_faces_through_a_table_matches_the_arithmetic():
    """Colour and gray models, no faces, and a batch that is a view (not contiguous): bit for bit ``normalize``."""
    rng = np.random.default_rng(2)
    for name in ("emotion_transfer", "fer_emotion_cnn"):
        spec = find(name).manifest.input
        shape = (3, spec.height, spec.width + 4, spec.channels)
        wide = rng.integers(0, 256, shape, dtype=np.uint8)
        for faces in (wide[:, :, :-4], wide[:, :, 2:-2], wide[:0, :, :-4]):
            for mirror in (False, True):
                expected = normalize(np.concatenate([faces, faces[..., ::-1, :]]) if mirror else faces, spec)
                np.testing.assert_array_equal(prepare_batch(faces, spec, mirror), expected)


def test_without_the_onnx_package_the_default_runs_its_one_graph(monkeypatch, caplog):
    """A plain ``pip install .`` has onnxruntime but not ``onnx``: the routed default still loads and answers (as
    one graph), and says why once in the log."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with caplog.at_level("INFO", logger="model_store.runtime"):
        predictor = Predictor.load(find("emotion_transfer", "1.1.0"), "onnx-int8")
    assert predictor.runner.routes is None
    assert "onnx package" in caplog.text
    faces = np.random.default_rng(2).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    probs = predictor.predict(list(faces))
    assert len(probs) == 2 and abs(sum(probs[0].emotions.values()) - 1) < 1e-4


def test_route_graphs_of_an_entry_holding_its_own_weights_get_them_in_memory(routed_graph, tmp_path):
    """An ensemble published without links keeps its weights in its own file, named by the graph as external data.
    The route graphs go to onnxruntime as bytes, with no folder to find that file in: the runner hands it over."""
    from model_store.manifest import FileEntry
    from model_store.runtime import OnnxRunner

    folder = tmp_path / "entry"
    folder.mkdir()
    onnx.save_model(
        onnx.load(str(routed_graph)),
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=64,  # the convolutions' kernels; scalars such as the gray test's threshold stay in the graph
    )
    shipped = find("emotion_transfer", "1.1.0").manifest  # a routed ensemble's manifest, re-pointed at this graph
    size = (folder / "weights.bin").stat().st_size
    manifest = shipped.model_copy(
        update={
            "input": shipped.input.model_copy(update={"mean": COLOUR_IN["mean"], "std": COLOUR_IN["std"]}),
            "files": [FileEntry(path="weights.bin", role="weights", sha256="0" * 64, bytes=size)],
        }
    )
    runner = OnnxRunner(folder / "model.onnx", manifest, "cpu")
    assert runner.routes is not None
    x = mixed_rows()
    whole = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(runner(x)["logits"], whole.run(None, {"input": x})[0], atol=1e-6)
