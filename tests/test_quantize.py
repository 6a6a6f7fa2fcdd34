"""int8 graphs: ``training.quantize`` on a copy of the default model (calibrated on a few FER2013 faces), the store
entry it leaves, the ``onnx-int8`` backend (and its fp32 fallback for entries without one), and the service serving
it when ``EMOTION_BACKEND=onnx-int8``."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from model_store import Predictor
from model_store.manifest import MANIFEST_NAME
from model_store.runtime import create_runner, resolved_backend
from model_store.store import find, read_manifest, verify_file
from tests.conftest import jpeg, upload
from training.quantize import INT8_NAME, Batches, get_args_parser, main


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, fer_root):
    """A store holding the default model with an int8 graph (made again here) next to its fp32 one."""
    entry = find("fer_emotion_cnn")
    root = tmp_path_factory.mktemp("store")
    folder = root / entry.manifest.name / entry.manifest.version
    shutil.copytree(entry.folder, folder)
    args = get_args_parser().parse_args(
        [
            "--model",
            str(folder),
            "--data",
            str(fer_root),
            "--split",
            "train",
            "--samples",
            "48",
            "--check-samples",
            "96",
        ]
    )
    report = main(args)
    return root, folder, report


def test_the_entry_records_the_int8_graph_and_how_it_was_made(quantized):
    _, folder, report = quantized
    manifest = read_manifest(folder)
    assert manifest.file("onnx_int8").path == INT8_NAME and manifest.file("onnx") is not None
    assert manifest.metrics["int8"] == report and report["calibration"]["faces"] == 48
    agreement = report["against_fp32_on_val"]
    assert agreement["rows"] == 192 and agreement["top1_agreement"] > 0.9
    assert (folder / INT8_NAME).stat().st_size < 0.5 * (folder / "model.safetensors").stat().st_size


def test_int8_runs_close_to_fp32(quantized, face_photo):
    root, _, _ = quantized
    entry = find("fer_emotion_cnn", root=root)
    verify_file(entry, "onnx_int8")
    fp32, int8 = Predictor.load(entry, "onnx"), Predictor.load(entry, "onnx-int8")
    assert (fp32.runner.backend, int8.runner.backend) == ("onnx", "onnx-int8")
    faces = [face_photo[40:300, 40:300], face_photo]
    a, b = fp32.predict(faces).probabilities, int8.predict(faces).probabilities
    assert np.abs(a - b).max() < 0.1 and not np.array_equal(a, b)


def test_an_entry_without_an_int8_graph_runs_its_fp32_one(tmp_path):
    entry = find("fer_emotion_cnn")
    folder = tmp_path / "store" / entry.manifest.name / entry.manifest.version
    shutil.copytree(entry.folder, folder)
    files = [f for f in entry.manifest.files if f.role != "onnx_int8"]
    plain = entry.manifest.model_copy(update={"files": files})
    (folder / MANIFEST_NAME).write_text(json.dumps(plain.model_dump(mode="json")))
    (folder / INT8_NAME).unlink()
    stripped = find(entry.manifest.name, root=tmp_path / "store")
    assert resolved_backend(stripped, "onnx-int8") == "onnx" == create_runner(stripped, "onnx-int8").backend
    assert resolved_backend(entry, "onnx-int8") == "onnx-int8"  # the committed default model has one


def test_calibration_reader_gives_batches_of_one_size():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    reader = Batches(x, "input", 4)
    chunks = iter(lambda: reader.get_next(), None)
    assert [len(c["input"]) for c in chunks] == [4, 4]  # one size: the remainder is left out
    assert len(Batches(x, "input", 64).get_next()["input"]) == 10


def test_the_service_serves_the_int8_graph_when_asked(quantized, make_client, face_photo):
    root, _, _ = quantized
    client = make_client(store_path=root, backend="onnx-int8", default_model="fer_emotion_cnn")
    response = client.post("/predict/image", files=upload(jpeg(face_photo)))
    assert response.status_code == 200 and len(response.json()["faces"]) == 1
    model = client.get("/models").json()
    assert "onnx-int8" in str(model)


def test_quantize_refuses_an_entry_without_an_onnx_graph(tmp_path, fer_root):
    entry = find("fer_emotion_cnn")
    folder = tmp_path / "m"
    shutil.copytree(entry.folder, folder)
    files = [f for f in entry.manifest.files if f.role not in ("onnx", "onnx_int8")]
    bare = entry.manifest.model_copy(update={"files": files})
    (folder / MANIFEST_NAME).write_text(json.dumps(bare.model_dump(mode="json")))
    with pytest.raises(SystemExit, match="no ONNX graph"):
        main(argparse.Namespace(model=folder, data=fer_root))
