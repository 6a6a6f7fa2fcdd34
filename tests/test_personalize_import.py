"""Per-person fine-tuning on a generated two-subject set (it must measurably help, and the personalised version must
be selectable by version), and importing checkpoints made elsewhere: an ONNX file exported by plain
``torch.onnx.export``, a state_dict of a registered architecture, and the refusal of a pickled whole model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model_store import StoreEntry, parse_input, read_manifest
from model_store.preprocess import standardize
from tests.kinds_support import FEATURE_TRAIN, feature_csv, publish_run, run, train_and_export
from training import import_model, personalize
from training.data_features import load_features
from training.export_onnx import export
from training.models import create_model
from training.runs import example_input

LABELS = ["low", "mid", "high"]


# --- personalisation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """A feature model trained on subject s01 only, published as eeg 1.0.0; and the two-subject CSV."""
    root = tmp_path_factory.mktemp("personal")
    data = feature_csv(root / "two.csv", subjects=2, rows_per_class=40, seed=1)
    run_dir = train_and_export(data, root / "run", FEATURE_TRAIN, "--subjects", "s01")
    return publish_run(run_dir, root / "store", "eeg"), data


@pytest.fixture(scope="module")
def personalised(base, tmp_path_factory) -> dict:
    folder, data = base
    out = tmp_path_factory.mktemp("report")
    argv = ["--model", folder, "--data", data, "--subject", "s02", "--output", out, "--no-torch-program"]
    return {**run(personalize, *argv, "--threads", "2", "--lr", "0.003"), "output": out}


def test_fine_tuning_on_a_person_measurably_helps_on_their_held_out_rows(personalised, capsys):
    assert personalised["version"] == "1.0.0+s02" and personalised["rows"] == {"fine_tune": 60, "held_out": 60}
    assert personalised["accuracy_before"] < 0.85  # the base model never saw this person: their offset misleads it
    assert personalised["accuracy_after"] >= personalised["accuracy_before"] + 0.1, personalised
    report = json.loads((personalised["output"] / "personalize.json").read_text())
    assert report["accuracy_after"] == personalised["accuracy_after"] and len(report["history"]) == 40
    assert (personalised["output"] / "after_confusion.png").is_file()


def test_personalised_version_keeps_the_early_layers_and_records_its_report(base, personalised):
    folder, _ = base
    new = folder.parent / "1.0.0+s02"
    manifest = read_manifest(new)
    assert manifest.metrics["personalization"]["accuracy_after"] == personalised["accuracy_after"]
    assert manifest.training["personalized_from"] == "eeg:1.0.0" and manifest.input == read_manifest(folder).input
    old, tuned = load_file(folder / "model.safetensors"), load_file(new / "model.safetensors")
    assert torch.equal(old["features.0.0.weight"], tuned["features.0.0.weight"])  # frozen
    assert not torch.equal(old["head.weight"], tuned["head.weight"])  # fine-tuned


def test_requests_select_the_personalised_version_by_version(base, personalised, make_client):
    folder, data = base
    client = make_client(store_path=folder.parent.parent, default_model="eeg")
    rows = load_features(data, subjects=["s02"]).x[:2].tolist()
    default = client.post("/predict/features?model=eeg", json={"features": rows}).json()
    assert default["model"]["version"] == "1.0.0"  # a person's version is served only when asked for
    for query in ("version=1.0.0%2Bs02", "version=1.0.0+s02"):  # an unencoded + arrives as a space
        body = client.post(f"/predict/features?model=eeg&{query}", json={"features": rows}).json()
        assert body["model"] == {"name": "eeg", "version": "1.0.0+s02"}, body
    versions = [m["version"] for m in client.get("/models").json()["models"] if m["name"] == "eeg"]
    assert versions == ["1.0.0+s02", "1.0.0"]


def test_personalisation_refuses_what_it_cannot_do(base, default_entry, tmp_path):
    folder, data = base
    with pytest.raises(SystemExit, match=r"no rows of subject\(s\) \['s9'\]; the file has \['s01', 's02'\]"):
        run(personalize, "--model", folder, "--data", data, "--subject", "s9", "--output", tmp_path)
    with pytest.raises(SystemExit, match="personalisation fine-tunes feature models"):
        run(personalize, "--model", default_entry.folder, "--data", data, "--subject", "s02")
    with pytest.raises(SystemExit, match="cannot be a local version"):
        run(personalize, "--model", folder, "--data", data, "--subject", "s 02")


# --- import ---------------------------------------------------------------------------------------------------


def write_spec(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"name": "imported", "version": "2.0.0", "labels": LABELS, **fields}))
    return path


@pytest.fixture
def onnx_elsewhere(tmp_path) -> Path:
    """A small gray-face classifier exported by torch's own TorchScript exporter, output named 'scores'."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    path = tmp_path / "theirs.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 32, 32),),
            str(path),
            input_names=["pixels"],
            output_names=["scores"],
            dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}},
            dynamo=False,
        )
    return path


FACE_INPUT = {"height": 32, "width": 32, "channels": 1, "mean": [0.5], "std": [0.25], "face_margin": 0.1}


def test_an_onnx_file_exported_elsewhere_becomes_a_served_store_entry(onnx_elsewhere, tmp_path, make_client, capsys):
    spec = write_spec(tmp_path / "spec.json", task="face-classification", input=FACE_INPUT)
    entry = run(import_model, "--onnx", onnx_elsewhere, "--spec", spec, "--store", tmp_path / "store")
    assert "smoke check: 2 rows of zeros -> scores [2, 3], finite" in capsys.readouterr().out
    assert entry.manifest.outputs == ["scores"] and [f.role for f in entry.manifest.files] == ["onnx"]
    client = make_client(store_path=tmp_path / "store", default_model="imported")
    face = cv2.imencode(".png", np.full((40, 40), 128, np.uint8))[1].tobytes()
    body = client.post("/predict/face", files={"file": ("f.png", face, "image/png")}).json()
    assert set(body["emotions"]) == set(LABELS) and body["model"] == {"name": "imported", "version": "2.0.0"}
    info = client.get("/models/imported").json()
    assert info["input"] == {**FACE_INPUT, "framing": "box", "edge": "clip", "frames": None}
    assert info["task"] == "face-classification"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {
                "task": "face-classification",
                "input": {**FACE_INPUT, "channels": 3, "mean": [0.5] * 3, "std": [0.2] * 3},
            },
            r"input 'pixels' is \['n', 1, 32, 32\]; the spec's input gives \[-1, 3, 32, 32\]",
        ),
        (
            {"task": "face-classification", "input": FACE_INPUT, "labels": ["a", "b"]},
            r"the spec's 2 labels need \[2, 2\]",
        ),
        ({"task": "face-classification"}, "input: Field required"),
        ({"task": "feature-classification", "input": FACE_INPUT}, "take feature vectors"),
    ],
)
def test_import_checks_the_onnx_file_against_the_spec(onnx_elsewhere, tmp_path, fields, message):
    spec = write_spec(tmp_path / "spec.json", **fields)
    with pytest.raises(SystemExit, match=message):
        run(import_model, "--onnx", onnx_elsewhere, "--spec", spec, "--store", tmp_path / "store")
    assert not (tmp_path / "store" / "imported").exists()


def test_import_refuses_an_onnx_file_with_a_fixed_batch(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 4),), str(path), dynamo=False)
    spec = write_spec(tmp_path / "spec.json", task="feature-classification", input={"length": 4})
    with pytest.raises(SystemExit, match="the batch axis is fixed at 1"):
        run(import_model, "--onnx", path, "--spec", spec, "--store", tmp_path / "store")


FEATURE_INPUT = {"length": 6, "mean": [1.0] * 6, "std": [2.0] * 6}
MLP_ARGS = '{"hidden": 8, "depth": 1}'


def mlp() -> torch.nn.Module:
    torch.manual_seed(3)
    return create_model("feature_mlp", 3, in_features=6, hidden=8, depth=1).eval()


def test_a_state_dict_is_imported_exported_and_served_as_its_weights_compute(tmp_path, make_client, capsys):
    model = mlp()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    spec = write_spec(tmp_path / "spec.json", task="feature-classification", input=FEATURE_INPUT)
    argv = ["--weights", tmp_path / "w.pth", "--architecture", "feature_mlp", "--arch-args", MLP_ARGS]
    entry = run(import_model, *argv, "--spec", spec, "--store", tmp_path / "store", "--no-torch-program")
    out = capsys.readouterr().out
    assert "parity: torch vs onnxruntime (exported here) max abs diff" in out and "published imported:2.0.0" in out
    assert entry.manifest.architecture == "feature_mlp" and entry.manifest.architecture_args == json.loads(MLP_ARGS)
    rows = np.random.default_rng(0).normal(1, 2, (3, 6)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(standardize(rows, entry.manifest.input))), 1).numpy()
    client = make_client(store_path=tmp_path / "store", default_model="imported")
    body = client.post("/predict/features?model=imported", json={"features": rows.tolist()}).json()
    got = np.array([[p["probabilities"][k] for k in LABELS] for p in body["predictions"]])
    assert np.abs(got - expected).max() < 1e-5


def test_weights_import_compares_a_given_onnx_file_with_the_weights(tmp_path, capsys):
    model = mlp()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    export(model, example_input(parse_input(FEATURE_INPUT), 2), ["logits"], tmp_path / "theirs.onnx")
    spec = write_spec(tmp_path / "spec.json", task="feature-classification", input=FEATURE_INPUT)
    argv = ["--weights", tmp_path / "w.pt", "--onnx", tmp_path / "theirs.onnx", "--architecture", "feature_mlp"]
    entry = run(import_model, *argv, "--arch-args", MLP_ARGS, "--spec", spec, "--store", tmp_path / "store")
    assert "parity: torch (w.pt) vs onnxruntime (theirs.onnx)" in capsys.readouterr().out
    assert {f.role for f in entry.manifest.files} == {"weights", "onnx", "torch_program"}
    assert (
        StoreEntry(read_manifest(entry.folder), entry.folder).path("onnx").read_bytes()
        == (tmp_path / "theirs.onnx").read_bytes()
    )


def test_a_pickled_whole_model_is_refused_with_how_to_export_a_state_dict(tmp_path):
    torch.save(mlp(), tmp_path / "full.pt")  # the whole module, pickled
    spec = write_spec(tmp_path / "spec.json", task="feature-classification", input=FEATURE_INPUT)
    argv = ["--weights", tmp_path / "full.pt", "--architecture", "feature_mlp", "--arch-args", MLP_ARGS]
    with pytest.raises(SystemExit, match=r"pickled Python object.*torch\.save\(model\.state_dict\(\), 'weights\.pt'\)"):
        run(import_model, *argv, "--spec", spec, "--store", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    torch.save(mlp().state_dict(), tmp_path / "w.pt")
    spec = write_spec(tmp_path / "spec.json", task="feature-classification", input=FEATURE_INPUT)
    argv = [
        "--weights",
        tmp_path / "w.pt",
        "--architecture",
        "feature_mlp",
        "--arch-args",
        '{"hidden": 16, "depth": 1}',
    ]
    with pytest.raises(SystemExit, match="does not fit feature_mlp"):
        run(import_model, *argv, "--spec", spec, "--store", tmp_path / "store")


# --- graphs with external data --------------------------------------------------------------------------------


def default_spec(entry: StoreEntry, path: Path) -> Path:
    """A spec for importing ``entry``'s graph: what ``GET /models`` shows of it."""
    keep = ("task", "labels", "input", "calibration_temperature", "mirror_tta", "mirror_tta_margin", "valence_arousal")
    fields = {k: v for k, v in entry.manifest.model_dump(mode="json").items() if k in keep}
    path.write_text(json.dumps({**fields, "name": "imported_default", "version": "1.0.0"}))
    return path


def test_the_shipped_defaults_graph_imports_self_contained_and_agrees(default_entry, fer_root, tmp_path, capsys):
    """The default's ``model.onnx`` reads its weights from ``model.safetensors`` and the member entry it links; the
    import reads them from there and publishes one self-contained file that agrees with the default as served."""
    import onnx

    from model_store import Predictor
    from training.data import load_faces

    spec = default_spec(default_entry, tmp_path / "spec.json")
    entry = run(import_model, "--onnx", default_entry.path("onnx"), "--spec", spec, "--store", tmp_path / "store")
    assert [(f.role, f.path) for f in entry.manifest.files] == [("onnx", "model.onnx")]
    graph = onnx.load(str(entry.path("onnx")), load_external_data=False).graph
    assert not [i.name for i in graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    faces = load_faces(fer_root, "val", default_entry.manifest.input, limit=300).images
    imported = Predictor.load(entry, backend="onnx").predict_faces(faces).probabilities
    served = Predictor.load(default_entry, backend="onnx-int8").predict_faces(faces).probabilities
    exact = Predictor.load(default_entry, backend="onnx", gate=False).predict_faces(faces).probabilities  # one graph
    agreement = float((imported.argmax(1) == served.argmax(1)).mean())
    print(f"imported vs the default (onnx-int8) on {len(faces)} FER2013 val crops: top-1 agreement {agreement:.3f}")
    assert agreement >= 0.95 and float(np.abs(imported - exact).max()) < 1e-5


def test_a_graph_whose_external_data_is_not_beside_it_is_refused_with_what_to_pass(default_entry, tmp_path):
    alone = tmp_path / "model.onnx"
    alone.write_bytes(default_entry.path("onnx").read_bytes())
    spec = default_spec(default_entry, tmp_path / "spec.json")
    with pytest.raises(SystemExit, match=r"not a file beside it.*model_store\.export_graph NAME VERSION OUT\.onnx"):
        run(import_model, "--onnx", alone, "--spec", spec, "--store", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_graph_with_its_data_file_beside_it_imports(tmp_path):
    """A graph exported elsewhere with ONNX external data in a file next to it."""
    import onnx

    model = create_model("emotion_cnn", 3, width=4, hidden=16, in_chans=1).eval()
    spec_in = parse_input(FACE_INPUT)
    folder = tmp_path / "theirs"
    path = export(model, example_input(spec_in, 2), ["logits"], folder / "net.onnx")
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=True, location="net.data", size_threshold=0)
    assert (folder / "net.data").is_file()
    spec = write_spec(tmp_path / "spec.json", task="face-classification", input=FACE_INPUT)
    entry = run(import_model, "--onnx", path, "--spec", spec, "--store", tmp_path / "store")
    assert [f.path for f in entry.manifest.files] == ["net.onnx"] and not list(entry.folder.glob("*.data"))
    x = example_input(spec_in, 3, seed=4)
    with torch.inference_mode():
        expected = model(x).numpy()
    from model_store import Predictor

    np.testing.assert_allclose(Predictor.load(entry).run(x.numpy())["logits"], expected, atol=1e-4)
