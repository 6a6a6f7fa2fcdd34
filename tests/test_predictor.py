"""The Predictor and its backends: mirror merge, calibration, valence/arousal, batching, the torch.export archive
check, onnx/torch parity on real crops, and that ``training.evaluate`` reports exactly what the Predictor predicts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_store import (
    CIRCUMPLEX,
    Predictions,
    Predictor,
    StoreError,
    derive_valence_arousal,
    find,
    merge_mirror,
    probabilities,
)
from model_store.manifest import TASKS, TaskKind
from model_store.predictor import mirror_margin, valence_arousal
from model_store.runtime import check_tensors_only, resolved_backend
from tests.factories import FER_LABELS, manifest
from training import evaluate
from training.data import load_faces

LABELS = FER_LABELS


class FailingRunner:
    backend, device = "fake", "cpu"

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise AssertionError("the runner must not be called")


@pytest.fixture(scope="module")
def program_entry():
    """The fast model: the default, a routed ensemble, has no torch program, so the two backends meet here."""
    return find("fer_emotion_cnn")


@pytest.fixture(scope="module")
def predictors(program_entry) -> dict[str, Predictor]:
    return {backend: Predictor.load(program_entry, backend) for backend in ("onnx", "torch")}


@pytest.fixture(scope="module")
def fer_crops(fer_root: Path) -> list[np.ndarray]:
    """Five FER2013 val crops of every class, as the service decodes them (BGR)."""
    paths = [p for label in LABELS for p in sorted((fer_root / "val" / label).glob("*.jpg"))[:5]]
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]


def test_merge_mirror_averages_each_face_with_its_mirror():
    x = np.array([[0.0, 2.0], [4.0, 4.0], [2.0, 0.0], [0.0, 8.0]])
    np.testing.assert_array_equal(merge_mirror(x, 2), [[1.0, 1.0], [2.0, 6.0]])


@pytest.mark.parametrize("rows", [0, 3, 5])
def test_merge_mirror_refuses_a_wrong_row_count(rows):
    with pytest.raises(ValueError, match="expected 4 rows"):
        merge_mirror(np.zeros((rows, 7)), 2)


def test_calibration_temperature_flattens_without_changing_the_argmax():
    logits = np.random.default_rng(0).normal(0, 3, (20, 7))
    sharp, flat = probabilities(logits, 1.0), probabilities(logits, 2.5)
    for p in (sharp, flat):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (flat.max(axis=1) < sharp.max(axis=1)).all()
    np.testing.assert_array_equal(flat.argmax(axis=1), sharp.argmax(axis=1))
    plain = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(sharp, plain / plain.sum(axis=1, keepdims=True), atol=1e-6)


def test_valence_arousal_follows_the_manifest():
    probs = np.eye(7, dtype=np.float32)[[3, 4]]  # happy, sad
    derived = valence_arousal(manifest(), probs, None)
    np.testing.assert_allclose(derived, [CIRCUMPLEX["happy"], CIRCUMPLEX["sad"]], atol=1e-6)
    np.testing.assert_allclose(derived, derive_valence_arousal(probs, LABELS))
    assert valence_arousal(manifest(valence_arousal="none"), probs, None) is None
    multitask = manifest(task="face-multitask", outputs=["logits", "valence_arousal"], valence_arousal="predicted")
    head = np.array([[1.7, -0.2], [-3.0, 0.9]], np.float32)
    np.testing.assert_allclose(valence_arousal(multitask, probs, head), [[1.0, -0.2], [-1.0, 0.9]], atol=1e-6)
    with pytest.raises(ValueError, match="valence/arousal head"):
        valence_arousal(multitask, probs, None)


def predictions(logits: np.ndarray, with_va: bool = True) -> Predictions:
    probs = probabilities(logits)
    return Predictions(tuple(LABELS), logits, probs, derive_valence_arousal(probs, LABELS) if with_va else None)


def test_predictions_select_concat_and_rows():
    p = predictions(np.random.default_rng(1).normal(0, 2, (4, 7)).astype(np.float32))
    picked = p.select([2, 0])
    np.testing.assert_array_equal(picked.logits, p.logits[[2, 0]])
    np.testing.assert_array_equal(picked.valence_arousal, p.valence_arousal[[2, 0]])
    joined = Predictions.concat([p.select([0, 1]), p.select([2, 3])], LABELS, with_va=True)
    np.testing.assert_array_equal(joined.probabilities, p.probabilities)
    np.testing.assert_array_equal(joined.valence_arousal, p.valence_arousal)
    face = p[1]
    assert list(face.emotions) == LABELS and face.dominant == p.dominant[1] == LABELS[int(p.logits[1].argmax())]
    assert face.valence == pytest.approx(float(p.valence_arousal[1, 0]))
    assert len(p) == 4 and [f.dominant for f in p] == p.dominant
    assert predictions(p.logits, with_va=False)[0].valence is None
    empty = Predictions.concat([], LABELS, with_va=True)
    assert empty.probabilities.shape == (0, 7) and empty.valence_arousal.shape == (0, 2)
    assert Predictions.concat([], LABELS, with_va=False).valence_arousal is None


def test_shipped_torch_program_passes_the_archive_check(program_entry):
    check_tensors_only(program_entry.folder / "model.pt2")


def test_the_torch_backend_runs_a_model_without_a_program_on_onnx(default_entry, fer_crops):
    assert default_entry.manifest.file("torch_program") is None  # routed by colour: torch.export cannot run it
    assert resolved_backend(default_entry, "torch") == "onnx" and resolved_backend(default_entry, "onnx-int8") == (
        "onnx-int8"
    )
    torch_, onnx = (Predictor.load(default_entry, b) for b in ("torch", "onnx"))
    assert torch_.runner.backend == "onnx"
    np.testing.assert_array_equal(torch_.predict(fer_crops[:4]).logits, onnx.predict(fer_crops[:4]).logits)


def copy_archive(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            name = next((n for n in replace if info.filename.endswith(n)), None)
            dst.writestr(info, replace[name] if name else src.read(info))
    return target


def test_archive_check_refuses_pickled_weights_and_constants(program_entry, tmp_path):
    source = program_entry.folder / "model.pt2"
    with zipfile.ZipFile(source) as archive:
        config_name = next(n for n in archive.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(archive.read(config_name))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    pickled = copy_archive(source, tmp_path / "pickled.pt2", {"_weights_config.json": json.dumps(config).encode()})
    with pytest.raises(StoreError, match="pickled payloads"):
        check_tensors_only(pickled)
    opaque = {"config": {"obj": {"path_name": "opaque_obj_0", "use_pickle": False}}}
    constants = copy_archive(source, tmp_path / "opaque.pt2", {"_constants_config.json": json.dumps(opaque).encode()})
    with pytest.raises(StoreError, match="pickled payloads"):
        check_tensors_only(constants)


class _OpensAFile:
    """Unpickling this creates ``marker``: what a malicious payload's code would run as."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_archive_check_refuses_sample_inputs_that_are_not_weights_only(program_entry, tmp_path):
    import torch

    marker, payload = tmp_path / "code_ran", io.BytesIO()
    torch.save(_OpensAFile(marker), payload)
    replace = {"sample_inputs/model.pt": payload.getvalue()}
    evil = copy_archive(program_entry.folder / "model.pt2", tmp_path / "evil.pt2", replace)
    with pytest.raises(StoreError, match="weights-only"):
        check_tensors_only(evil)
    assert not marker.exists()


def test_archive_check_refuses_a_file_that_is_no_zip(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(StoreError, match=r"not a torch\.export archive"):
        check_tensors_only(path)


def test_onnx_and_torch_backends_agree_on_real_crops(predictors, fer_crops):
    onnx, torch_ = (predictors[b].predict(fer_crops) for b in ("onnx", "torch"))
    assert len(onnx) == len(fer_crops) == 35
    np.testing.assert_allclose(onnx.logits, torch_.logits, atol=1e-4)
    np.testing.assert_allclose(onnx.probabilities, torch_.probabilities, atol=1e-4)
    np.testing.assert_allclose(onnx.valence_arousal, torch_.valence_arousal, atol=1e-4)
    assert onnx.dominant == torch_.dominant


def test_mirror_tta_doubles_the_batch_and_merges_back(predictors, fer_crops, program_entry):
    predictor, crops = predictors["onnx"], fer_crops[:6]
    prepared = predictor.prepare(crops)
    spec = program_entry.manifest.input
    shape = (spec.channels, spec.height, spec.width)
    assert prepared.mirrored and prepared.n == 6 and prepared.x.shape == (12, *shape)
    np.testing.assert_array_equal(prepared.x[6:], prepared.x[:6, ..., ::-1])
    outputs = predictor.run(prepared.x)
    result = predictor.postprocess(outputs, prepared)
    assert len(result) == 6 and result.probabilities.shape == (6, 7)
    np.testing.assert_allclose(result.logits, merge_mirror(outputs["logits"], 6))
    plain = Predictor.load(program_entry, tta=False).prepare(crops)
    assert not plain.mirrored and plain.x.shape == (6, *shape)


class EdgeRunner:
    """Logits from each row's two edge pixels (a mirror image swaps them); records the rows of every call."""

    backend, device = "fake", "cpu"

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(batch.copy())
        logits = np.zeros((len(batch), 7), np.float32)
        logits[:, 0], logits[:, 1] = batch[:, 0, 0, 0], batch[:, 0, 0, -1]
        return {"logits": logits, "valence_arousal": logits[:, :2] / 10}


def edge_faces(left: list[float], right: list[float]) -> np.ndarray:
    x = np.zeros((len(left), 1, 48, 48), np.float32)
    x[:, 0, 0, 0], x[:, 0, 0, -1] = left, right
    return x


def test_adaptive_mirror_tta_runs_a_second_pass_only_for_unsure_faces():
    # faces 0 and 2 are sure (a margin far above 0.4), faces 1 and 3 are not
    x = edge_faces([9.0, 0.3, 0.0, 0.0], [0.0, 0.0, 9.0, 0.2])
    runner = EdgeRunner()
    predictor = Predictor(
        manifest(valence_arousal="predicted", outputs=["logits", "valence_arousal"]), runner, tta_margin=0.4
    )
    assert predictor.tta and not predictor.paired
    counted: list[int] = []
    predictor.on_mirror_pass = counted.append  # the service's metric: faces per second pass
    outputs = predictor.run(x)
    assert len(runner.calls) == 2 and len(runner.calls[1]) == 2  # the second pass: the two unsure faces, mirrored
    assert counted == [2]
    np.testing.assert_array_equal(runner.calls[1], x[[1, 3], ..., ::-1])
    full = EdgeRunner()(np.concatenate([x, x[..., ::-1]]))
    plain = EdgeRunner()(x)
    for key in ("logits", "valence_arousal"):
        np.testing.assert_allclose(outputs[key][[1, 3]], merge_mirror(full[key], 4)[[1, 3]])  # full TTA's rows
        np.testing.assert_array_equal(outputs[key][[0, 2]], plain[key][[0, 2]])  # the first pass's rows


@pytest.mark.parametrize("left", [9.0, 0.3])  # a sure face, an unsure one
def test_a_lone_face_takes_its_mirror_in_the_same_call_with_the_same_answer(left):
    """One call of two rows costs less than two calls of one: a lone face's mirror rides along, and its answer is
    what the second pass would give (plain when sure, averaged when not)."""
    x = edge_faces([left], [0.0])
    runner, counted = EdgeRunner(), []
    predictor = Predictor(manifest(), runner, tta_margin=0.4)
    predictor.on_mirror_pass = counted.append
    alone = predictor.run(x)
    assert len(runner.calls) == 1 and len(runner.calls[0]) == 2  # the face and its mirror image, one call
    two_calls = Predictor(manifest(), EdgeRunner(), tta_margin=0.4).run(np.concatenate([x, edge_faces([0.3], [0.0])]))
    np.testing.assert_allclose(alone["logits"], two_calls["logits"][:1])
    assert counted == ([] if left == 9.0 else [1])


def test_rows_that_are_not_eligible_keep_the_first_pass():
    """A client's own tensors (``/v2``) batched beside faces: only eligible unsure rows get the mirror pass, and an
    output that is not one float row per face is left as the first pass gave it."""

    class WithCount(EdgeRunner):
        def __call__(self, batch):
            return super().__call__(batch) | {"count": np.array([len(batch)])}

    x = edge_faces([0.3, 0.0, 0.1], [0.0, 0.2, 0.0])  # all three unsure
    runner = WithCount()
    outputs = Predictor(manifest(), runner, tta_margin=0.4).run(x, eligible=np.array([True, False, True]))
    np.testing.assert_array_equal(runner.calls[1], x[[0, 2], ..., ::-1])
    plain = EdgeRunner()(x)["logits"]
    np.testing.assert_array_equal(outputs["logits"][1], plain[1])  # the ineligible row: as the model gave it
    assert not np.array_equal(outputs["logits"][0], plain[0]) and outputs["count"].tolist() == [3]


def test_a_margin_where_nothing_is_mirrored_is_refused_in_the_manifest():
    with pytest.raises(ValueError, match="mirror_tta_margin applies to single-label face models"):
        manifest(mirror_tta=False, mirror_tta_margin=0.2)


def test_adaptive_mirror_tta_makes_one_pass_when_every_face_is_sure():
    runner = EdgeRunner()
    predictor = Predictor(manifest(), runner, tta_margin=0.4)
    prepared = predictor.prepare_faces(np.zeros((2, 48, 48, 1), np.uint8))
    assert not prepared.mirrored and prepared.x.shape == (2, 1, 48, 48)  # no mirror rows ride along
    predictor.run(edge_faces([9.0, 0.0], [0.0, 9.0]))
    assert len(runner.calls) == 1


@pytest.mark.parametrize(
    ("overrides", "tta", "paired"),
    [
        ({}, True, False),
        ({"mirror_tta": False}, False, False),  # the manifest turns TTA off: no second pass either
        ({"task": "binary-attribute", "labels": ["no", "yes"]}, True, False),
    ],
)
def test_the_margin_applies_only_to_single_label_models_that_mirror(overrides, tta, paired):
    predictor = Predictor(manifest(**overrides), EdgeRunner(), tta_margin=0.4)
    assert (predictor.tta, predictor.paired) == (tta, paired)


def test_the_margin_is_the_manifests_unless_overridden():
    own = manifest(mirror_tta_margin=0.25)
    assert Predictor(own, EdgeRunner()).tta_margin == 0.25  # the model's measured choice, as served
    assert Predictor(own, EdgeRunner(), tta_margin=1.0).paired  # the service's override: every face, one call
    assert Predictor(own, EdgeRunner(), tta=False).tta_margin == 1.0 and not Predictor(own, None, tta=False).paired
    assert mirror_margin(manifest(), margin=0.3) == 0.3 and mirror_margin(manifest(mirror_tta=False), True, 0.3) == 1


def test_a_multi_label_model_never_gets_a_margin(monkeypatch):
    """A sigmoid per label has no top-two margin: such a model mirrors every face, whatever the setting says."""
    monkeypatch.setitem(TASKS, "binary-attribute", TaskKind("face", multi_label=True, mirror_tta=True))
    predictor = Predictor(manifest(task="binary-attribute", labels=["no", "yes"]), EdgeRunner(), tta_margin=0.2)
    assert predictor.tta and predictor.paired and predictor.tta_margin == 1.0


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_adaptive_mirror_tta_gives_full_ttas_answer_for_unsure_real_faces(program_entry, fer_crops, backend):
    full, adaptive = (Predictor.load(program_entry, backend, tta_margin=m) for m in (1.0, 0.4))
    a, f = adaptive.predict(fer_crops), full.predict(fer_crops)
    plain = Predictor.load(program_entry, backend, tta=False)
    unsure = adaptive.margins(plain.run(plain.prepare(fer_crops).x)) < 0.4  # the first pass's raw outputs
    assert 0 < unsure.sum() < len(fer_crops)
    np.testing.assert_allclose(a.logits[unsure], f.logits[unsure], atol=1e-5)
    assert np.mean(np.array(a.dominant) == np.array(f.dominant)) >= 0.9


def test_no_crops_give_zero_rows_without_calling_the_runner():
    predictor = Predictor(manifest(), FailingRunner())
    for result in (predictor.predict([]), predictor.predict_faces(np.zeros((0, 48, 48, 1), np.uint8))):
        assert len(result) == 0 and result.logits.shape == (0, 7) and result.valence_arousal.shape == (0, 2)
    assert predictor.infer(predictor.prepare([])).probabilities.shape == (0, 7)


def test_evaluate_needs_neither_torch_nor_the_training_models():
    code = "import sys, training.evaluate; print(sorted({'torch', 'training.models'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_evaluate_reports_the_predictors_accuracy(backend, predictors, program_entry, fer_root, tmp_path):
    argv = ["--model", str(program_entry.folder), "--data", str(fer_root), "--limit", "64", "--backend", backend]
    metrics = evaluate.main(evaluate.get_args_parser().parse_args([*argv, "--output", str(tmp_path)]))
    data = load_faces(fer_root, "val", program_entry.manifest.input, program_entry.manifest.labels, 64)
    predicted = predictors[backend].predict_faces(data.images)
    accuracy = float((predicted.probabilities.argmax(axis=1) == data.targets).mean())
    assert metrics["samples"] == 64 and metrics["backend"] == backend and metrics["tta"] is True
    assert metrics["accuracy"] == accuracy
    assert json.loads((tmp_path / "eval.json").read_text())["accuracy"] == accuracy


def test_fitted_logit_bias_undoes_a_prior_shift():
    """Logits pushed towards label 0 by a constant: the fitted bias takes the push back out and recall evens out."""
    from training.calibration import cross_validated, fit_logit_bias

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 3000)
    logits = rng.normal(0, 1, (3000, 3)) + 2.0 * np.eye(3)[targets]
    shifted = logits + np.array([1.5, 0.0, 0.0])
    bias = fit_logit_bias(shifted, targets)
    np.testing.assert_allclose(bias - bias.mean(), [-1.0, 0.5, 0.5], atol=0.2)

    def recall(z):
        return [(z.argmax(1)[targets == k] == k).mean() for k in range(3)]

    before = min(recall(shifted))
    assert min(recall(shifted + bias)) > before + 0.1
    assert min(recall(cross_validated(shifted, targets))) > before + 0.1


def test_labels_without_examples_keep_a_zero_bias():
    from training.calibration import fit_logit_bias

    targets = np.array([0, 1, 0, 1] * 50)
    logits = np.random.default_rng(1).normal(0, 1, (200, 3))
    assert fit_logit_bias(logits, targets)[2] == 0.0


def test_manifest_logit_bias_is_added_before_calibration():
    entry = manifest(logit_bias={"happy": -50.0})
    predictor = Predictor(entry, lambda x: {"logits": np.tile(np.eye(7, dtype=np.float32)[3] * 10, (len(x), 1))})
    preds = predictor.infer(predictor.prepare_faces(np.zeros((2, 48, 48, 1), np.uint8)))
    assert preds.logits[0, 3] == pytest.approx(-40.0) and preds[0].dominant != "happy"
    with pytest.raises(ValueError, match="labels the model lacks"):
        manifest(logit_bias={"bored": 1.0})
