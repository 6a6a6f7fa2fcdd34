"""The gate (``model_store.gate``): an ensemble's cheap member answers alone for the faces it is sure of.

Pure logic on a fake runner (which rows go where, what each row's answer is), the graph cut on the shipped default
(the rest graph fed the gate's probabilities is the whole graph), and what ``/models`` says."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from model_store import Predictor, find
from model_store.gate import log_probs, top_margin
from model_store.manifest import Gate
from model_store.predictor import MIRROR_AHEAD
from tests.conftest import metric, upload
from tests.factories import manifest

GATE = {"output": "probs", "margin": 0.8}


def gate_row(margin: float) -> np.ndarray:
    """Probabilities whose top-two margin is ``margin`` (label 3 on top)."""
    p = np.full(7, (1 - margin) / 8, np.float32)
    p[3] += margin + (1 - margin) / 8
    return p / p.sum()


class GatedRunner:
    """Gate probabilities from each row's first pixel (its margin); the whole model's logits from the row's two
    edge pixels plus the gate probabilities it was given, so a test sees which rows got which probabilities."""

    backend, device, gated = "onnx-int8", "cpu", True

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.given: list[np.ndarray] = []

    def gate_probs(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(("gate", len(batch)))
        return np.stack([gate_row(float(row[0, 0, 1])) for row in batch])

    def rest(self, batch: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(("rest", len(batch)))
        self.given.append(probs.copy())
        return self._logits(batch, probs)

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(("whole", len(batch)))
        return self._logits(batch, np.stack([gate_row(float(row[0, 0, 1])) for row in batch]))

    @staticmethod
    def _logits(batch: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
        logits = probs.copy()
        logits[:, 0] += batch[:, 0, 0, 0]
        logits[:, 1] += batch[:, 0, 0, -1]
        return {"logits": logits}


def faces(margins: list[float], left: list[float] | None = None) -> np.ndarray:
    x = np.zeros((len(margins), 1, 48, 48), np.float32)
    x[:, 0, 0, 1] = margins
    x[:, 0, 0, 0] = left or [0.0] * len(margins)
    return x


def predictor(runner, **kwargs) -> Predictor:
    return Predictor(manifest(gate=GATE, mirror_tta_margin=0.4), runner, **kwargs)


def test_sure_faces_get_the_gate_and_only_the_others_reach_the_rest_graph():
    runner, counted = GatedRunner(), []
    p = predictor(runner, tta=False)
    p.on_gate = lambda n, k: counted.append((n, k))
    x = faces([0.9, 0.2, 0.85, 0.5], left=[0.0, 1.0, 0.0, 2.0])
    out = p.run(x)["logits"]
    assert runner.calls == [("gate", 4), ("rest", 2)] and counted == [(4, 2)]
    np.testing.assert_allclose(runner.given[0], np.stack([gate_row(0.2), gate_row(0.5)]))  # their own probabilities
    np.testing.assert_allclose(out[[0, 2]], log_probs(np.stack([gate_row(0.9), gate_row(0.85)])), rtol=1e-6)
    np.testing.assert_allclose(out[[1, 3]], GatedRunner()(x[[1, 3]])["logits"])  # the whole model's answer


def test_every_face_sure_makes_one_call_and_none_sure_makes_two():
    runner = GatedRunner()
    predictor(runner, tta=False).run(faces([0.95, 0.99]))
    assert runner.calls == [("gate", 2)]
    runner = GatedRunner()
    out = predictor(runner, tta=False).run(faces([0.1, 0.3]))["logits"]
    assert runner.calls == [("gate", 2), ("rest", 2)]
    np.testing.assert_allclose(out, GatedRunner()(faces([0.1, 0.3]))["logits"])


@pytest.mark.parametrize(
    ("margin", "calls"),
    [
        (0.95, [("gate", 1)]),  # the gate answers: no mirror image is looked at
        (0.2, [("gate", 1), ("gate", 1), ("rest", 2)]),  # likely unsure: its mirror image rides in the rest call
        (0.5, [("gate", 1), ("rest", 1), ("whole", 1)]),  # the face alone first, its mirror image as the ensemble asks
    ],
)
def test_a_lone_faces_mirror_image_is_scored_only_where_its_gate_margin_says_it_will_be_needed(margin, calls):
    """A lone face's gate call holds the face alone. Under ``MIRROR_AHEAD`` its mirror image joins the rest call
    (after a gate call of its own); over it the rest graph reads the face alone, and the whole graph the mirror image
    when the ensemble is unsure. The answer is the mirror-merged whole model's either way."""
    assert MIRROR_AHEAD < 0.5 < GATE["margin"]
    runner = GatedRunner()
    x = faces([margin], left=[0.1])
    out = predictor(runner).run(x)["logits"]
    assert runner.calls == calls
    if margin >= GATE["margin"]:
        np.testing.assert_allclose(out, log_probs(gate_row(margin)[None]), rtol=1e-6)
    else:
        whole = Predictor(manifest(mirror_tta_margin=0.4), GatedRunner()).run(x)["logits"]
        np.testing.assert_allclose(out, whole, rtol=1e-6)


@pytest.mark.parametrize(
    ("margins", "left", "calls"),
    [
        ([0.9, 0.2], [0.0, 0.1], [("gate", 2), ("gate", 1), ("rest", 2)]),
        ([0.9, 0.5], [0.0, 0.1], [("gate", 2), ("rest", 1), ("whole", 1)]),
        ([0.9, 0.5], [0.0, 9.0], [("gate", 2), ("rest", 1)]),
    ],
)
def test_the_one_face_of_a_batch_the_gate_leaves_is_planned_as_a_lone_face(margins, left, calls):
    """Two faces, the gate sure of one: the other follows the lone face's rule (its mirror image ahead of need only
    under ``MIRROR_AHEAD``), and counts its gate call and mirror pass as a lone face would."""
    runner, counted, mirrored = GatedRunner(), [], []
    p = predictor(runner)
    p.on_gate = lambda n, k: counted.append((n, k))
    p.on_mirror_pass = mirrored.append
    x = faces(margins, left=left)
    out = p.run(x)["logits"]
    assert runner.calls == calls and counted == [(2, 1)] and mirrored == ([] if left[1] > 1 else [1])
    np.testing.assert_allclose(out[0], log_probs(gate_row(0.9)[None])[0], rtol=1e-6)
    whole = Predictor(manifest(mirror_tta_margin=0.4), GatedRunner()).run(x[1:])["logits"]
    np.testing.assert_allclose(out[1:], whole, rtol=1e-6)


def test_a_lone_face_that_is_not_the_models_gets_neither_the_gate_nor_a_mirror_pass():
    runner, mirrored = GatedRunner(), []
    p = predictor(runner)
    p.on_mirror_pass = mirrored.append
    x = faces([0.95], left=[0.1])
    out = p.run(x, eligible=np.array([False]))["logits"]
    assert runner.calls == [("gate", 1), ("rest", 1)] and mirrored == []
    np.testing.assert_allclose(out, GatedRunner()(x)["logits"])


def test_a_lone_face_the_ensemble_is_sure_of_gets_no_mirror_pass():
    runner = GatedRunner()
    x = faces([0.5], left=[9.0])  # a large logit: the ensemble is sure, though the gate is not
    out = predictor(runner).run(x)["logits"]
    assert runner.calls == [("gate", 1), ("rest", 1)]
    np.testing.assert_allclose(out, GatedRunner()(x)["logits"], rtol=1e-6)


def test_unsure_faces_of_a_batch_get_their_mirror_pass_from_the_whole_graph():
    runner = GatedRunner()
    x = faces([0.9, 0.1, 0.2], left=[0.0, 0.0, 5.0])  # face 1: unsure for the gate and the ensemble alike
    out = predictor(runner).run(x)["logits"]
    assert runner.calls == [("gate", 3), ("rest", 2), ("whole", 1)]
    whole = Predictor(manifest(mirror_tta_margin=0.4), GatedRunner()).run(x)["logits"]
    np.testing.assert_allclose(out[1:], whole[1:], rtol=1e-6)


def test_rows_that_are_not_eligible_never_get_the_gates_answer():
    runner = GatedRunner()
    x = faces([0.9, 0.95])
    out = predictor(runner, tta=False).run(x, eligible=np.array([True, False]))["logits"]
    assert runner.calls == [("gate", 2), ("rest", 1)]
    np.testing.assert_allclose(out[1], GatedRunner()(x[1:])["logits"][0])


@pytest.mark.parametrize(
    ("kwargs", "runner_gated"),
    [({"gate": False}, True), ({"tta_margin": 1.0}, True), ({}, False)],
)
def test_the_gate_is_off_when_asked_with_paired_mirrors_or_a_runner_that_cut_none(kwargs, runner_gated):
    runner = GatedRunner()
    runner.gated = runner_gated
    p = predictor(runner, **kwargs)
    assert p.gate_margin is None
    p.run(faces([0.99]))
    assert runner.calls[0][0] == "whole"


def test_the_manifest_takes_a_gate_only_for_single_label_face_models():
    assert manifest(gate=GATE).gate == Gate(**GATE)
    for overrides in (
        {"task": "frame-attributes", "labels": ["a", "b"], "thresholds": {"a": 0.5, "b": 0.5}},
        {"outputs": ["logits", "va"]},
    ):
        with pytest.raises(ValidationError, match="gate applies to single-label face models"):
            manifest(gate=GATE, **overrides)
    with pytest.raises(ValidationError):
        manifest(gate={"output": "probs", "margin": 0.0})


def test_top_margin_and_log_probs():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]], np.float32)
    np.testing.assert_allclose(top_margin(p), [0.5, 0.0], atol=1e-7)
    assert log_probs(np.array([[0.0, 1.0]]))[0, 0] == pytest.approx(np.log(1e-8))


@pytest.fixture(scope="module")
def default():
    return find("emotion_transfer", "1.1.0")


@pytest.fixture(scope="module")
def mixed_faces(fer_root, default) -> np.ndarray:
    """FER2013 val crops (gray) and colour copies tinted apart, as the default's 150-px input."""
    import cv2

    from model_store import to_uint8_face

    spec = default.manifest.input
    paths = sorted((fer_root / "val").glob("*/*.jpg"))[::200][:12]
    gray = [to_uint8_face(cv2.imread(str(p)), spec) for p in paths]
    tint = np.array([0, 10, 30])
    tinted = [np.clip(f.astype(int) + tint, 0, 255).astype(np.uint8) for f in gray[:6]]
    return np.stack(gray + tinted)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_the_shipped_defaults_rest_graph_fed_its_gate_is_the_whole_graph(default, mixed_faces, backend):
    """fp32: the same numbers; int8: the same labels, probabilities within 0.01 (the whole graph quantises the
    gate member's softmax; the cut hands it over unquantised)."""
    p = Predictor.load(default, backend)
    assert p.gate_margin == 0.85 and p.runner.gated
    x = p.prepare_faces(mixed_faces).x
    gate = p.runner.gate_probs(x)
    assert gate.shape == (len(x), 7) and np.allclose(gate.sum(1), 1, atol=1e-4)
    whole, cut = p.runner(x)["logits"], p.runner.rest(x, gate)["logits"]
    if backend == "onnx":
        np.testing.assert_allclose(cut, whole, atol=1e-5)
    else:
        assert (cut.argmax(1) == whole.argmax(1)).all()
        np.testing.assert_allclose(np.exp(cut), np.exp(whole), atol=0.01)


def test_the_default_answers_sure_faces_with_its_gate_and_labels_as_without(default, mixed_faces):
    on, counted = Predictor.load(default, "onnx-int8"), []
    off = Predictor(default.manifest, on.runner, gate=False)
    on.on_gate = lambda n, k: counted.append(k)
    with_gate, without = on.infer(on.prepare_faces(mixed_faces)), off.infer(off.prepare_faces(mixed_faces))
    assert counted[0] > 0, "no face was sure enough for the gate: pick other faces"
    assert list(with_gate.dominant) == list(without.dominant)


def test_models_says_where_the_gate_is_served_and_metrics_count_its_answers(make_client, happy_face_bytes):
    client = make_client()
    listed = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert listed["emotion_transfer"]["gate_margin"] == 0.85 and listed["fer_emotion_cnn"]["gate_margin"] is None
    for _ in range(3):
        assert client.post("/predict/face", files=upload(happy_face_bytes)).status_code == 200
    text = client.get("/metrics").text
    series = 'emotion_gate_faces_total{answered_by="%s",model="emotion_transfer:1.1.0"}'
    assert metric(text, series % "gate") + metric(text, series % "ensemble") == 3
    off = {m["name"]: m for m in make_client(gate=False).get("/models").json()["models"]}
    assert off["emotion_transfer"]["gate_margin"] is None


def test_with_the_gate_off_no_gate_graph_is_cut(default):
    """``EMOTION_GATE=false`` loads the default as before: one session per route, no gate or rest sessions idle."""
    off = Predictor.load(default, "onnx-int8", gate=False)
    assert off.gate_margin is None and not off.runner.gated and not hasattr(off.runner, "rest_sessions")


def test_a_gate_on_a_tensor_the_graph_lacks_fails_the_load_and_says_which(default):
    from model_store.runtime import OnnxRunner

    manifest = default.manifest.model_copy(update={"gate": Gate(output="nope", margin=0.9)})
    with pytest.raises(ValueError, match="no tensor 'nope' to gate on"):
        OnnxRunner(default.path("onnx_int8"), manifest, "cpu")


@pytest.mark.parametrize("margin", [0.95, 0.5, 0.2])
def test_the_mirror_ahead_benchmarks_old_plan_answers_as_the_served_one(margin):
    """``benchmarks.mirror_ahead`` times the old plan (the mirror image in both calls) against the served one: the
    same answer, whichever calls a face takes."""
    from benchmarks.mirror_ahead import by_margin, paired_plan

    x, runner = faces([margin], left=[0.1]), GatedRunner()
    np.testing.assert_allclose(paired_plan(predictor(runner), x), predictor(GatedRunner()).run(x)["logits"])
    assert runner.calls == [("gate", 2)] if margin >= GATE["margin"] else [("gate", 2), ("rest", 2)]  # the old plan
    bins = by_margin([(0.05, True), (0.15, False), (0.12, True), (0.9, None)], [0.0, 0.1, 0.2])
    assert [(b["faces"], b["mirror_share"]) for b in bins] == [(1, 1.0), (2, 0.5)]
