"""The store package: manifest validation, publish/verify with checksums, the shared preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from model_store import (
    InputSpec,
    StoreError,
    derive_valence_arousal,
    expand_box,
    find,
    preprocess,
    probabilities,
    publish,
    read_linked,
    resolve_device,
    scan,
    verify_file,
    version_key,
)
from tests.factories import FER_LABELS, manifest

LABELS = FER_LABELS


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", "x" * 70, "a..b"])
def test_manifest_rejects_unsafe_name(name):
    with pytest.raises(ValidationError):
        manifest(name=name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input": {"height": 48, "width": 48, "channels": 3}}, "mean and std need 3"),
        ({"task": "clip-classification"}, "input.frames"),
        ({"task": "binary-attribute"}, "exactly two labels"),
        ({"labels": ["a", "a"]}, "unique"),
        ({"valence_arousal": "predicted"}, "valence_arousal"),
    ],
)
def test_manifest_rejects_inconsistent_fields(overrides, message):
    with pytest.raises(ValidationError, match=message):
        manifest(**overrides)


def test_manifest_rejects_file_path_outside_folder():
    with pytest.raises(ValidationError, match="plain file name"):
        manifest(files=[{"path": "../x.onnx", "role": "onnx", "sha256": "0" * 64, "bytes": 1}])


def test_shipped_default_manifest_is_valid_and_checksums_match(default_entry):
    assert default_entry.manifest.labels == LABELS
    for entry in default_entry.manifest.files:
        if entry.role != "linked_weights":
            assert verify_file(default_entry, entry.role).is_file()
    assert [link.entry_key for link, _ in read_linked(default_entry)] == ["fer_emotion_cnn:1.3.0"]


def test_publish_records_checksums_and_verify_detects_tampering(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    entry = publish(manifest(), {"onnx": artifact}, tmp_path / "store")
    assert verify_file(entry, "onnx").read_bytes() == b"weights"
    (entry.folder / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(StoreError, match="checksum mismatch"):
        verify_file(entry, "onnx")


def test_publish_refuses_to_overwrite_without_flag(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"w")
    publish(manifest(), {"onnx": artifact}, tmp_path)
    with pytest.raises(StoreError, match="exists"):
        publish(manifest(), {"onnx": artifact}, tmp_path)


def test_find_picks_the_newest_version_numerically(tmp_path):
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"w")
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        publish(manifest(version=version), {"onnx": artifact}, tmp_path / "store")
    assert find("m", root=tmp_path / "store").manifest.version == "1.10.0"
    assert find("m", "1.2.0", tmp_path / "store").manifest.version == "1.2.0"
    assert sorted(["1.10.0", "1.9.0", "1.2.0"], key=version_key) == ["1.2.0", "1.9.0", "1.10.0"]
    with pytest.raises(StoreError, match="no model 'x'"):
        find("x", root=tmp_path / "store")


def test_scan_reports_invalid_and_misplaced_manifests(tmp_path):
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "manifest.json").write_text("{not json")
    (tmp_path / "other" / "2").mkdir(parents=True)
    (tmp_path / "other" / "2" / "manifest.json").write_text(json.dumps(manifest().model_dump()))
    entries, errors = scan(tmp_path)
    assert entries == []
    assert any("invalid manifest" in e for e in errors.values())
    assert any("lives in other/2" in e for e in errors.values())


@pytest.mark.parametrize("shape", [(100, 80), (100, 80, 3), (100, 80, 4), (30, 30, 1)])
def test_preprocess_reads_size_and_channels_from_spec(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    gray = preprocess([image], InputSpec(height=48, width=48))
    rgb = preprocess([image], InputSpec(height=64, width=32, channels=3, mean=[0.5] * 3, std=[0.5] * 3))
    assert gray.shape == (1, 1, 48, 48) and gray.dtype == np.float32
    assert rgb.shape == (1, 3, 64, 32)


def test_preprocess_normalises_with_manifest_mean_and_std():
    white = np.full((48, 48), 255, np.uint8)
    x = preprocess([white], InputSpec(height=48, width=48, mean=[0.5], std=[0.25]))
    assert np.allclose(x, 2.0)


def test_preprocess_hflip_tta_appends_mirrored_rows():
    image = np.tile(np.arange(48, dtype=np.uint8), (48, 1))
    x = preprocess([image], InputSpec(height=48, width=48), hflip_tta=True)
    assert x.shape[0] == 2
    assert np.allclose(x[1], x[0][..., ::-1])


def test_expand_box_grows_squares_and_clips_to_image():
    assert expand_box((10, 10, 20, 40), 0.0, (100, 100)) == (0, 10, 40, 40)
    x, y, w, h = expand_box((90, 90, 20, 20), 0.5, (100, 100))
    assert x + w <= 100 and y + h <= 100


def test_probabilities_sum_to_one_and_temperature_flattens():
    logits = np.array([[2.0, 0.0, -1.0]])
    sharp, flat = probabilities(logits, 1.0), probabilities(logits, 3.0)
    assert np.isclose(sharp.sum(), 1.0) and np.isclose(flat.sum(), 1.0)
    assert flat.max() < sharp.max()


def test_derived_valence_arousal_follows_circumplex():
    happy = np.eye(7)[[LABELS.index("happy")]]
    sad = np.eye(7)[[LABELS.index("sad")]]
    assert derive_valence_arousal(happy, LABELS)[0, 0] > 0.5
    assert derive_valence_arousal(sad, LABELS)[0, 0] < -0.5


def test_resolve_device_rejects_unknown_and_auto_picks_available():
    assert resolve_device("auto") in {"cpu", "cuda"}
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")
