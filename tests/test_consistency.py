"""One code path: the HTTP routes, the offline scorer and ``training.evaluate`` give the same answers for the same
input, because they all run the same pipelines and the same ``model_store.Predictor``."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.schemas import ImagePredictionResponse
from service.score import get_args_parser, main
from tests.conftest import DEFAULT_MODEL, upload, wait_ready
from training.evaluate import get_args_parser as evaluate_args
from training.evaluate import main as evaluate


def test_scorer_and_image_route_return_identical_faces_and_probabilities(client, photo_paths, tmp_path):
    photos = photo_paths[:6]
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for path in photos:
        shutil.copy(path, inputs / path.name)
    assert main(get_args_parser().parse_args([str(inputs), "--output", str(out), "--no-plot"])) == 0
    faces = 0
    for path in photos:
        scored = ImagePredictionResponse.model_validate_json((out / f"{path.stem}.json").read_text())
        served = client.post("/predict/image", files=upload(path.read_bytes()))
        assert served.status_code == 200
        assert scored == ImagePredictionResponse.model_validate(served.json()), path.name
        faces += len(scored.faces)
    assert faces >= len(photos) - 1  # nearly every photo has a face, so boxes and probabilities were compared


def test_evaluate_measures_what_the_face_route_serves(client, fer_root, tmp_path):
    """``training.evaluate`` on a face folder: the same accuracy and the same confusion matrix (so the same label
    for every crop) as ``POST /predict/face`` on the same crops."""
    data = tmp_path / "faces"
    crops: list[tuple[str, bytes]] = []
    for label_dir in sorted((fer_root / "val").iterdir()):
        (data / label_dir.name).mkdir(parents=True)
        for path in sorted(label_dir.glob("*.jpg"))[:6]:
            shutil.copy(path, data / label_dir.name / path.name)
            crops.append((label_dir.name, path.read_bytes()))
    served_backend = next(m for m in client.get("/models").json()["models"] if m["default"])["backend"]
    assert served_backend == "onnx-int8"  # the default; its int8 graph may label a face differently than fp32
    for backend in (served_backend, "onnx", "torch"):
        if backend != served_backend:  # the same app on this backend, so each report meets what it served
            settings = Settings(_env_file=None, backend=backend)
            with TestClient(create_app(settings)) as other:
                wait_ready(other)
                served = [other.post("/predict/face", files=upload(body)).json() for _, body in crops]
        else:
            served = [client.post("/predict/face", files=upload(body)).json() for _, body in crops]
        out = tmp_path / f"eval-{backend}"
        args = ["--model", str(_default_folder(client)), "--data", str(data), "--split", "", "--backend", backend]
        evaluate(evaluate_args().parse_args([*args, "--output", str(out), "--name", "faces"]))
        report = json.loads((out / "faces.json").read_text())
        accuracy = np.mean([s["dominant"] == label for (label, _), s in zip(crops, served, strict=True)])
        assert report["samples"] == len(crops)
        assert report["accuracy"] == pytest.approx(accuracy, abs=1e-12), backend
        labels = list(report["per_class"])
        cm = np.zeros((len(labels), len(labels)), int)
        for (label, _), s in zip(crops, served, strict=True):
            cm[labels.index(label), labels.index(s["dominant"])] += 1
        assert report["confusion_matrix"] == cm.tolist(), backend


def test_scorer_reports_a_clip_model_given_photos_per_file_and_goes_on(store_copy, face_photo, tmp_path, monkeypatch):
    """A clip model pointed at photos fails each photo with the route's message; the run finishes and reports."""
    from service.config import get_settings

    manifest_path = next(store_copy.glob("*/*/manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    clip = {"input": {**manifest["input"], "frames": 4}, "mirror_tta_margin": 1.0, "gate": None}
    manifest.update(task="clip-classification", **clip)
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setenv("EMOTION_STORE_PATH", str(store_copy))
    monkeypatch.setenv("EMOTION_WARMUP", "false")  # a 2-D network under a clip manifest: never called here
    get_settings.cache_clear()
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(inputs / name), face_photo)
    try:
        status = main(get_args_parser().parse_args([str(inputs), "--output", str(out), "--no-plot"]))
    finally:
        get_settings.cache_clear()
    assert status == 1
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all("classifies clips; send videos to /predict/video" in row for row in rows[1:])


def _default_folder(client):
    models = client.get("/models").json()["models"]
    default = next(m for m in models if m["name"] == DEFAULT_MODEL and m["default"])
    from model_store import find

    return find(DEFAULT_MODEL, default["version"]).folder


def test_canvas_views_differ_only_outside_the_image_and_keep_the_other_rows():
    """``on_canvas``: in a chosen row the image is shrunk inside the crop; around it the first view repeats the
    image's border and the second is one plain level. Rows not chosen come back as they were."""
    import torch

    from training.augment import on_canvas

    gen = torch.Generator().manual_seed(0)
    faces = torch.linspace(0, 255, 48).view(1, 1, 48, 1).expand(64, 48, 48, 1).clone()  # a horizontal ramp
    a, b = on_canvas(faces, 0.5, gen)
    changed = (a != faces).flatten(1).any(1)
    assert 16 < int(changed.sum()) < 48  # about half the rows
    assert torch.equal(a[~changed], faces[~changed]) and torch.equal(b[~changed], faces[~changed])
    for row in torch.nonzero(changed).flatten().tolist():
        values, counts = torch.unique(b[row].round(decimals=3), return_counts=True)
        plain = (b[row] - values[counts.argmax()]).abs() < 1e-3  # the canvas's one level
        assert plain.float().mean() > 0.03  # the image's side is at most 0.95 of the crop's
        assert float(a[row][plain].std()) > 1.0  # where the photo's own crop repeats its border (the ramp)
        assert torch.allclose(a[row, 20:28, 20:28], b[row, 20:28, 20:28])  # the image itself: the same in both
