"""Frame-attribute and feature-vector models end to end: manifests, the Predictor's sigmoid and standardisation, the
two data loaders with bad rows, training with the training commands, publishing into a running service's store,
``POST /models/reload`` picking them up, their routes and errors, video attribute timelines, metrics, and reloads
while requests run."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from model_store import Predictor, StoreEntry, copy_entry, find, newest, read_manifest, version_key
from model_store.predictor import sigmoid
from service.config import Settings
from service.errors import ModelNotFound
from service.main import create_app
from service.metrics import Metrics
from service.registry import ModelRegistry
from tests.conftest import metric, wait_ready
from tests.factories import manifest
from tests.kinds_support import (
    ATTRIBUTE_TRAIN,
    FEATURE_TRAIN,
    attribute_clip,
    feature_csv,
    publish_run,
    train_and_export,
)
from training.attribute_reports import average_precision, best_threshold
from training.data import DatasetError
from training.data_attributes import load_attributes, read_attribute_csv
from training.data_features import load_features, read_feature_csv
from training.synth import make_frames

RGB = {"height": 32, "width": 32, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}


# --- manifests and the Predictor ------------------------------------------------------------------------------


def test_feature_manifest_takes_a_vector_spec_and_fills_attribute_thresholds():
    m = manifest(task="feature-classification", labels=["a", "b"], input={"length": 3, "mean": [0, 1, 2]})
    assert m.input.tensor_shape == (3,) and m.valence_arousal == "none"
    a = manifest(task="frame-attributes", labels=["x", "y"], input=RGB, thresholds={"x": 0.3})
    assert a.thresholds == {"x": 0.3, "y": 0.5} and a.kind.multi_label


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "feature-classification", "input": {"height": 8, "width": 8}}, "take feature vectors: input needs"),
        ({"input": {"length": 4}}, "take images: input needs height"),
        ({"task": "feature-classification", "input": {"length": 3, "std": [1, 1]}}, "input.std has 2 values"),
        ({"task": "feature-classification", "input": {"length": 2, "std": [1, 0]}}, "must be positive"),
        ({"task": "frame-attributes", "input": RGB, "thresholds": {"zz": 0.5}}, "not labels of this model"),
        ({"task": "frame-attributes", "input": RGB, "thresholds": {"angry": 1.0}}, "strictly between 0 and 1"),
        ({"task": "frame-attributes", "input": RGB, "valence_arousal": "derived"}, "set valence_arousal to 'none'"),
        ({"thresholds": {"angry": 0.4}}, "apply to frame-attributes models"),
        ({"version": "1.0.0+P07"}, "not a valid version"),
    ],
)
def test_manifest_errors_say_the_fix(overrides, message):
    with pytest.raises(ValidationError, match=message):
        manifest(**overrides)


def test_local_versions_are_valid_and_sort_after_their_public_version_but_are_never_the_default():
    assert manifest(version="1.0.0+p07").version == "1.0.0+p07"
    ordered = ["0.9.0", "1.0.0", "1.0.0+p07", "1.0.0+p10", "1.0.1", "1.10.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert newest(["1.0.0", "1.0.0+p07"]) == "1.0.0" and newest(["1.0.0+p07"]) == "1.0.0+p07"


class RecordingRunner:
    backend, device = "fake", "cpu"

    def __init__(self, out: np.ndarray) -> None:
        self.out, self.seen = out, []

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.seen.append(batch)
        return {"logits": np.repeat(self.out[None], len(batch), 0)}


def test_predictor_applies_sigmoid_and_thresholds_for_attribute_models():
    m = manifest(task="frame-attributes", labels=["x", "y", "z"], input=RGB, thresholds={"x": 0.9, "y": 0.2})
    runner = RecordingRunner(np.array([1.0, -1.0, 0.0], np.float32))
    preds = Predictor(m, runner).predict([np.zeros((50, 80, 3), np.uint8)])
    np.testing.assert_allclose(preds.probabilities[0], sigmoid(np.array([1.0, -1.0, 0.0])), rtol=1e-6)
    assert preds.attributes(0).present == ["y", "z"]  # 0.73 < 0.9; 0.27 >= 0.2; 0.5 >= 0.5
    assert runner.seen[0].shape == (1, 3, 32, 32)  # whole frame resized, no mirror copy


def test_predictor_standardises_feature_rows_with_the_manifest_statistics():
    m = manifest(task="feature-classification", labels=["a", "b"], input={"length": 2, "mean": [1, 2], "std": [2, 4]})
    runner = RecordingRunner(np.array([0.0, 1.0], np.float32))
    preds = Predictor(m, runner).predict_features(np.array([[3.0, 10.0], [1.0, 2.0]]))
    np.testing.assert_allclose(runner.seen[0], [[1.0, 2.0], [0.0, 0.0]])
    assert preds.dominant == ["b", "b"] and abs(preds.probabilities.sum(1) - 1).max() < 1e-6
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        Predictor(m, runner).prepare_features(np.zeros((1, 3)))


def test_attribute_report_average_precision_and_threshold_choice():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1.0, 0.0, 1.0])) == pytest.approx(5 / 6)
    # F1 is best (0.8) for any threshold in (0.1, 0.3]: the one closest to 0.5 is taken
    assert best_threshold(np.array([0.1, 0.3, 0.35, 0.6]), np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(0.3)
    assert best_threshold(np.array([0.01, 0.02, 0.9, 0.95]), np.array([0.0, 0.0, 1.0, 1.0])) == 0.5
    assert best_threshold(np.array([0.2, 0.7]), np.array([0.0, 0.0])) == 0.5  # nothing to choose by


# --- loaders ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("subject,a,b\ns1,1,2\n", "no 'label' column"),
        ("label,subject\nx,s1\n", "no feature columns"),
        ("label,a,b\nx,1,2\ny,1,oops\n", r"f.csv:3: column 'b' holds 'oops', not a number"),
        ("label,a,b\nx,1,2\ny,nan,2\n", r"f.csv:3: column 'a' holds 'nan'; use finite numbers"),
        ("label,a,b\nx,1,2\ny,1\n", r"f.csv:3: 2 fields, the header has 3"),
        ("label,a,b\n,1,2\n", r"f.csv:2: empty label"),
        ("label,a,b\n", "no data rows"),
    ],
)
def test_feature_csv_bad_rows_name_file_row_and_column(tmp_path, text, message):
    (tmp_path / "f.csv").write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_feature_csv(tmp_path / "f.csv")


def test_feature_csv_reads_labels_subjects_and_columns_in_order(tmp_path):
    (tmp_path / "f.csv").write_text("label,subject,b,a\nx,s1,1,2\ny,s2,3,4\nx,s2,5,6\n")
    data = load_features(tmp_path / "f.csv", subjects=["s2"])
    assert data.columns == ["b", "a"] and data.labels == ["x", "y"] and data.x.tolist() == [[3, 4], [5, 6]]
    with pytest.raises(DatasetError, match=r"no rows of subject\(s\) \['s9'\]; the file has \['s1', 's2'\]"):
        load_features(tmp_path / "f.csv", subjects=["s9"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("path,a\n", "no rows"),
        ("file,a\nx.png,1\n", "no 'path' column"),
        ("path\nx.png\n", "no attribute columns"),
        ("path,a,b\nok.png,1,0\nok.png,1,2\n", r"a.csv:3: column 'b' holds '2'; use 1 or 0"),
        ("path,a\nmissing.png,1\n", r"a.csv:2: file 'missing.png' does not exist"),
        ("path,a\n,1\n", r"a.csv:2: empty path"),
        ("path,a,b\nok.png,1\n", r"a.csv:2: 3 fields expected"),
    ],
)
def test_attribute_csv_bad_rows_name_file_and_row(tmp_path, rows, message):
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a.csv").write_text(rows)
    with pytest.raises(DatasetError, match=message):
        read_attribute_csv(tmp_path / "a.csv")


def test_attribute_csv_loads_whole_frames_as_rgb(tmp_path):
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    (tmp_path / "a.csv").write_text("path,red,blue\nf.png,yes,false\n")
    data = load_attributes(tmp_path / "a.csv", None, manifest(task="frame-attributes", input=RGB).input)
    assert data.images.shape == (1, 32, 32, 3) and data.images[0, 0, 0].tolist() == [255, 0, 0]
    assert data.labels == ["red", "blue"] and data.targets.tolist() == [[1.0, 0.0]]


# --- trained models, published into a running service ---------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A feature model and an attribute model trained with ``training.train`` on generated data, exported."""
    root = tmp_path_factory.mktemp("kinds")
    features = feature_csv(root / "eeg.csv")
    frames = make_frames(root / "frames", count=96, size=48)
    return {
        "eeg_csv": features,
        "frames_csv": frames,
        "eeg": train_and_export(features, root / "eeg", FEATURE_TRAIN, "--subjects", "s01", torch_program=True),
        "scene": train_and_export(frames, root / "scene", ATTRIBUTE_TRAIN),
    }


@pytest.fixture(scope="module")
def kinds_store(runs, tmp_path_factory, default_entry) -> Path:
    store = tmp_path_factory.mktemp("kinds_store")
    copy_entry(default_entry, store)  # with the member entry whose weights it links
    publish_run(runs["eeg"], store, "eeg")
    publish_run(runs["scene"], store, "scene")
    publish_run(runs["scene"], store, "scene_b")  # a second member of a suite
    return store


@pytest.fixture(scope="module")
def api(kinds_store):
    with TestClient(create_app(Settings(_env_file=None, store_path=kinds_store, max_loaded_models=8))) as client:
        wait_ready(client)
        yield client


def eeg_rows(runs, subject: str = "s01", n: int = 6) -> tuple[list[list[float]], list[str]]:
    data = load_features(runs["eeg_csv"], subjects=[subject])
    idx = np.linspace(0, len(data) - 1, n).astype(int)
    return data.x[idx].tolist(), [data.labels[t] for t in data.targets[idx]]


def frame_bytes(runs, i: int = 0) -> bytes:
    return (runs["frames_csv"].parent / f"frame_{i:05d}.png").read_bytes()


def test_trained_models_are_published_and_served_after_a_reload_without_restart(runs, store_copy, make_client):
    client = make_client(store_path=store_copy)
    assert client.post("/predict/features?model=eeg", json={"features": [[0.0] * 167]}).status_code == 404
    publish_run(runs["eeg"], store_copy, "eeg")
    publish_run(runs["scene"], store_copy, "scene")
    reload = client.post("/models/reload")
    assert reload.status_code == 200, reload.text
    assert reload.json()["added"] == [{"name": "eeg", "version": "1.0.0"}, {"name": "scene", "version": "1.0.0"}]
    listed = {(m["name"], m["task"]) for m in client.get("/models").json()["models"]}
    assert {("eeg", "feature-classification"), ("scene", "frame-attributes")} <= listed
    rows, labels = eeg_rows(runs)
    features = client.post("/predict/features?model=eeg", json={"features": rows})
    assert features.status_code == 200, features.text
    predicted = [p["label"] for p in features.json()["predictions"]]
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 5  # its own subject: well learnt
    attributes = client.post("/predict/attributes?model=scene", files={"file": ("f.png", frame_bytes(runs))})
    assert attributes.status_code == 200, attributes.text
    assert attributes.json()["results"][0]["model"] == {"name": "scene", "version": "1.0.0"}


def test_feature_route_answers_what_the_predictor_gives_one_row_each(api, runs, kinds_store):
    rows, _ = eeg_rows(runs)
    body = api.post("/predict/features?model=eeg", json={"features": rows}).json()
    expected = Predictor.load(find("eeg", root=kinds_store)).predict_features(np.array(rows))
    assert body["model"] == {"name": "eeg", "version": "1.0.0"} and len(body["predictions"]) == len(rows)
    for row, got in enumerate(body["predictions"]):
        assert got["label"] == expected.dominant[row]
        assert max(abs(got["probabilities"][k] - p) for k, p in expected[row].emotions.items()) < 1e-5
    manifest_input = api.get("/models/eeg").json()["input"]
    assert manifest_input["length"] == 167 and len(manifest_input["mean"]) == 167  # standardisation from training


def test_feature_model_also_runs_on_the_torch_backend(kinds_store, make_client, runs):
    client = make_client(store_path=kinds_store, backend="torch")
    rows, _ = eeg_rows(runs, n=2)
    onnx = Predictor.load(find("eeg", root=kinds_store)).predict_features(np.array(rows)).probabilities
    body = client.post("/predict/features?model=eeg", json={"features": rows}).json()
    torch_probs = [[p["probabilities"][k] for k in sorted(p["probabilities"])] for p in body["predictions"]]
    labels = sorted(body["predictions"][0]["probabilities"])
    order = [read_manifest(kinds_store / "eeg" / "1.0.0").labels.index(k) for k in labels]
    assert np.abs(np.array(torch_probs) - onnx[:, order]).max() < 1e-4


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"features": [[1.0] * 166]}, 422, "row 0 has 166 values; this model takes rows of 167: shape [N, 167]"),
        ({"features": [[1.0] * 167, [1.0] * 168]}, 422, "row 1 has 168 values"),
        ({"features": []}, 422, "holds no rows; send a list of rows of shape [N, 167]"),
        ({"features": [[1.0] * 167] * 5}, 413, "5 rows sent; at most 4 per request"),
        ({"features": [[1e39] * 167]}, 422, "row 0, feature 0 is 1e+39: features must be finite"),
        ({"rows": [[1.0] * 167]}, 422, "features"),
        ({"features": [["a"] * 167]}, 422, "float"),
    ],
)
def test_feature_route_errors_name_the_expected_shape(kinds_store, make_client, body, status, fragment):
    client = make_client(store_path=kinds_store, limits={"max_feature_rows": 4, "max_feature_values": 2000})
    response = client.post("/predict/features?model=eeg", json=body)
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"]), response.json()


def test_feature_route_refuses_nan_infinity_and_too_many_values(kinds_store, make_client):
    client = make_client(store_path=kinds_store, limits={"max_feature_values": 300})
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        raw = b'{"features": [[' + b", ".join([token] + [b"1.0"] * 166) + b"]]}"
        response = client.post("/predict/features?model=eeg", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "no NaN or inf" in response.json()["detail"], response.text
    too_many = client.post("/predict/features?model=eeg", json={"features": [[1.0] * 167] * 2})
    assert too_many.status_code == 413 and "334 values sent; at most 300" in too_many.json()["detail"]


def test_attribute_route_scores_a_suite_in_the_order_named(api, runs, kinds_store):
    data = frame_bytes(runs, 3)
    response = api.post(
        "/predict/attributes?model=scene_b&model=scene:1.0.0", content=data, headers={"Content-Type": "image/png"}
    )
    body = response.json()
    assert response.status_code == 200, body
    assert [r["model"]["name"] for r in body["results"]] == ["scene_b", "scene"] and (
        body["width"],
        body["height"],
    ) == (48, 48)
    first, second = body["results"]
    assert first["attributes"] == second["attributes"]  # the same run published twice
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    expected = Predictor.load(find("scene", root=kinds_store)).predict([image])
    for k, p in expected.attributes(0).attributes.items():
        assert abs(first["attributes"][k] - p) < 1e-5
    assert first["present"] == [k for k in first["attributes"] if first["attributes"][k] >= first["thresholds"][k]]
    assert set(first["thresholds"]) == {"warm", "circle", "stripes", "text"}


@pytest.mark.parametrize(
    ("route", "query", "status", "fragment"),
    [
        ("/predict/attributes", "model=eeg", 422, "classifies feature vectors; send them as JSON to /predict/features"),
        ("/predict/attributes", "", 422, "classifies faces"),
        ("/predict/attributes", "model=scene&model=nope", 404, "unknown model 'nope'"),
        ("/predict/attributes", "model=scene&model=scene_b&version=1.0.0", 422, "model=name:version"),
        ("/predict/attributes", "model=scene&model=scene:9.9", 404, "has no version '9.9'"),
        (
            "/predict/face",
            "model=scene",
            422,
            "labels whole frames with attributes; send images to /predict/attributes",
        ),
        ("/predict/image", "model=eeg", 422, "classifies feature vectors"),
    ],
)
def test_wrong_model_kind_or_name_on_image_routes(api, runs, route, query, status, fragment):
    response = api.post(f"{route}?{query}", files={"file": ("f.png", frame_bytes(runs))})
    assert response.status_code == status and fragment in response.json()["detail"], response.text


def test_wrong_kind_on_the_feature_and_video_routes(api, runs, tmp_path):
    assert api.post("/predict/features", json={"features": [[1.0]]}).status_code == 422  # the default: faces
    video = attribute_clip(tmp_path / "v.mp4").read_bytes()
    response = api.post("/predict/video?model=eeg", files={"file": ("v.mp4", video, "video/mp4")})
    assert response.status_code == 422 and "feature vectors" in response.json()["detail"]


def test_suite_size_is_limited(kinds_store, make_client, runs):
    client = make_client(store_path=kinds_store, limits={"max_suite_models": 2})
    response = client.post(
        "/predict/attributes?model=scene&model=scene_b&model=x", files={"file": ("f.png", frame_bytes(runs))}
    )
    assert response.status_code == 422 and "at most 2 per request" in response.json()["detail"]


def test_video_with_an_attribute_model_gives_a_timeline_and_share_of_time(api, tmp_path):
    video = attribute_clip(tmp_path / "v.mp4").read_bytes()
    response = api.post(
        "/predict/video?model=scene&sample_fps=5&smoothing=0", files={"file": ("v.mp4", video, "video/mp4")}
    )
    body = response.json()
    assert response.status_code == 200, body
    assert body["tracks"] == [] and body["summary"] is None and body["valence_arousal_source"] == "none"
    timeline = body["attributes"]["timeline"]
    assert len(timeline) == body["frames_analyzed"] == 15 and [p["t"] for p in timeline] == sorted(
        p["t"] for p in timeline
    )
    thresholds = body["attributes"]["thresholds"]
    for name, share in body["attributes"]["share"].items():
        present = [name in p["present"] for p in timeline]
        assert share == pytest.approx(sum(present) / len(present), abs=1e-4)
        assert all((p["attributes"][name] >= thresholds[name]) == on for p, on in zip(timeline, present, strict=True))
        covered = sum(s["end"] - s["start"] for s in body["attributes"]["segments"] if s["attribute"] == name)
        assert covered == pytest.approx(sum(present) * 0.2, abs=1e-3)  # each sample covers 1 / sample_fps


def test_metrics_count_feature_rows_and_attribute_frames(api, runs):
    before = api.get("/metrics").text
    rows, _ = eeg_rows(runs, n=3)
    api.post("/predict/features?model=eeg", json={"features": rows})
    api.post("/predict/attributes?model=scene", files={"file": ("f.png", frame_bytes(runs))})
    after = api.get("/metrics").text

    def value(text: str, prefix: str) -> float:
        return metric(text, prefix) if prefix in text else 0.0

    assert (
        value(after, 'emotion_feature_rows_total{model="eeg:1.0.0"}')
        - value(before, 'emotion_feature_rows_total{model="eeg:1.0.0"}')
        == 3
    )
    frames = 'emotion_attribute_predictions_total{model="scene:1.0.0"}'
    assert value(after, frames) - value(before, frames) == 1
    assert 'emotion_requests_total{method="POST",route="/predict/features",status="200"}' in after


# --- reload ----------------------------------------------------------------------------------------------------


def test_reload_removes_and_adds_versions_and_needs_the_api_key(kinds_store, tmp_path, make_client):
    store = tmp_path / "store"
    shutil.copytree(kinds_store, store)
    client = make_client(store_path=store, api_key="k")
    assert client.post("/models/reload").status_code == 401
    shutil.rmtree(store / "scene_b")
    shutil.copytree(store / "eeg" / "1.0.0", store / "eeg" / "1.1.0")
    manifest_path = store / "eeg" / "1.1.0" / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace('"version": "1.0.0"', '"version": "1.1.0"'))
    (store / "broken" / "1.0.0").mkdir(parents=True)
    (store / "broken" / "1.0.0" / "manifest.json").write_text("{}")
    body = client.post("/models/reload", headers={"X-API-Key": "k"}).json()
    assert body["added"] == [{"name": "eeg", "version": "1.1.0"}]
    assert body["removed"] == [{"name": "scene_b", "version": "1.0.0"}] and body["versions"] == 5  # + linked member
    assert list(body["invalid"]) == [str(store.resolve() / "broken" / "1.0.0")]
    listed = {(m["name"], m["version"]) for m in client.get("/models", headers={"X-API-Key": "k"}).json()["models"]}
    assert ("scene_b", "1.0.0") not in listed and ("eeg", "1.1.0") in listed
    gone = client.post("/predict/attributes?model=scene_b", files={"file": ("f.png", b"x")}, headers={"X-API-Key": "k"})
    assert gone.status_code == 404


def test_periodic_rescan_picks_up_a_new_version(kinds_store, tmp_path, make_client):
    store = tmp_path / "store"
    shutil.copytree(kinds_store, store, ignore=shutil.ignore_patterns("scene*"))
    client = make_client(store_path=store, reload_interval_s=0.2)
    shutil.copytree(kinds_store / "scene", store / "scene")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(m["name"] == "scene" for m in client.get("/models").json()["models"]):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the periodic rescan did not pick up the new model")
    assert 'emotion_model_reloads_total{trigger="periodic"}' in client.get("/metrics").text


def test_requests_in_flight_finish_on_a_version_removed_under_them(kinds_store, tmp_path, runs):
    store = tmp_path / "store"
    shutil.copytree(kinds_store, store)
    rows, _ = eeg_rows(runs, n=4)
    x = np.array(rows, np.float32)

    async def scenario():
        registry = ModelRegistry(Settings(_env_file=None, store_path=store), Metrics())
        eeg, scene = await registry.get("eeg"), await registry.get("scene")
        expected = eeg.predictor.predict_features(x).probabilities
        gate, runner = threading.Event(), eeg.predictor.runner
        eeg.predictor.runner = lambda batch: (gate.wait(10), runner(batch))[1]  # every model call waits for the gate
        running = [asyncio.create_task(eeg.infer(eeg.predictor.prepare_features(x[i : i + 1]))) for i in range(4)]
        await asyncio.sleep(0.1)  # one batch is running (blocked), the other rows wait in the batcher
        shutil.rmtree(store / "eeg")
        reload = asyncio.create_task(registry.reload())
        await asyncio.sleep(0.1)
        assert not reload.done()  # unloading waits for the running batch
        gate.set()
        result, done = await reload, await asyncio.gather(*running)
        assert result.removed == [("eeg", "1.0.0")] and result.added == []
        np.testing.assert_allclose(np.concatenate([d.probabilities for d in done]), expected, atol=1e-6)
        with pytest.raises(ModelNotFound):
            await registry.get("eeg")
        assert registry.resolve("scene").loaded is scene  # unchanged versions keep their state
        await registry.close()

    asyncio.run(scenario())


def test_http_requests_during_a_reload_all_succeed(kinds_store, tmp_path, make_client, runs):
    from concurrent.futures import ThreadPoolExecutor

    store = tmp_path / "store"
    shutil.copytree(kinds_store, store)
    client = make_client(store_path=store)
    rows, _ = eeg_rows(runs, n=8)

    def call(_):
        return client.post("/predict/features?model=eeg&version=1.0.0", json={"features": rows}).status_code

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(call, i) for i in range(24)]
        shutil.copytree(store / "eeg" / "1.0.0", store / "eeg" / "2.0.0")
        manifest_path = store / "eeg" / "2.0.0" / "manifest.json"
        manifest_path.write_text(manifest_path.read_text().replace('"version": "1.0.0"', '"version": "2.0.0"'))
        reloads = [client.post("/models/reload").json() for _ in range(3)]
        statuses = [p.result() for p in pending]
    assert statuses == [200] * 24 and reloads[0]["added"] == [{"name": "eeg", "version": "2.0.0"}]
    latest = client.post("/predict/features?model=eeg", json={"features": rows[:1]}).json()
    assert latest["model"]["version"] == "2.0.0"
    assert StoreEntry(read_manifest(store / "eeg" / "2.0.0"), store / "eeg" / "2.0.0").manifest.version == "2.0.0"


def test_v2_metadata_and_infer_for_a_feature_model(api, runs):
    """The Open Inference Protocol describes a feature model as ``[-1, L]`` FP32 with no image input, and runs it."""
    meta = api.get("/v2/models/eeg")
    assert meta.status_code == 200, meta.text
    inputs = {t["name"]: t for t in meta.json()["inputs"]}
    assert "image" not in inputs
    (tensor,) = inputs.values()
    rows, _ = eeg_rows(runs, n=2)
    assert tensor["datatype"] == "FP32" and tensor["shape"] == [-1, len(rows[0])]
    body = {"inputs": [{"name": tensor["name"], "datatype": "FP32", "shape": [2, len(rows[0])], "data": rows}]}
    answer = api.post("/v2/models/eeg/infer", json=body)
    assert answer.status_code == 200, answer.text
    shapes = {o["name"]: o["shape"] for o in answer.json()["outputs"]}
    assert shapes["probabilities"][0] == 2


def test_a_video_job_with_a_feature_model_is_refused_before_queueing(api, tmp_path):
    video = attribute_clip(tmp_path / "v.mp4").read_bytes()
    response = api.post("/jobs/video?model=eeg", files={"file": ("v.mp4", video, "video/mp4")})
    assert response.status_code == 422 and "feature vectors" in response.json()["detail"]
    assert all(job["model"]["name"] != "eeg" for job in api.get("/jobs").json()["jobs"])
