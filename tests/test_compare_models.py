"""benchmarks.compare_models: the averaging it scores, its argument checks, and a real run on shipped models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks import compare_models
from model_store import find
from tests.conftest import DEFAULT_MODEL
from tests.test_ensemble import Fixed
from training.models.ensemble import Ensemble
from training.reports import softmax


def test_one_member_is_its_own_calibrated_softmax():
    z = np.random.default_rng(0).normal(size=(5, 7))
    np.testing.assert_allclose(np.exp(compare_models.mean_calibrated([z], [0.7])), softmax(z, 0.7), atol=1e-9)


def test_the_average_is_what_the_served_ensemble_computes():
    a, b = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0]
    graph = Ensemble([Fixed(a), Fixed(b)], [0.5, 2.0])(torch.zeros(1, 1)).numpy()
    ours = compare_models.mean_calibrated([np.array([a]), np.array([b])], [0.5, 2.0])
    np.testing.assert_allclose(ours, graph, atol=1e-5)


@pytest.mark.parametrize("text", ["0+9", "0+0", "a+b", ""])
def test_bad_combos_are_refused_with_the_fix(text):
    with pytest.raises(ValueError, match="--combo"):
        compare_models.parse_combo(text, 3)


def test_the_grid_covers_every_weighting_that_sums_to_one():
    rows = compare_models.simplex(3, 0.25)
    assert len(rows) == 15 and all(abs(sum(r) - 1) < 1e-9 for r in rows) and (0.5, 0.25, 0.25) in rows
    with pytest.raises(ValueError, match=r"--grid 0\.3"):
        compare_models.simplex(2, 0.3)


def test_grid_rows_rank_by_val_accuracy_and_score_photos_balanced():
    y = np.array([0, 0, 1, 1])
    right, wrong = np.log(np.eye(2)[y] * 0.9 + 0.05), np.log(np.eye(2)[1 - y] * 0.9 + 0.05)
    photos = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]]))  # one of two label-1 photos
    outputs = {"val": ([right, wrong], y), "photos": ([photos, photos], y)}
    grid = compare_models.weight_grid(outputs, [1.0, 1.0], 0.5, min_support=1)
    assert grid[0]["weights"] == [1.0, 0.0] and grid[0]["val"]["accuracy"] == 1.0
    assert grid[-1]["weights"] == [0.0, 1.0] and grid[-1]["val"]["accuracy"] == 0.0
    assert grid[0]["photos"] == {"accuracy": 0.75, "balanced_accuracy": 0.75}


def test_entries_with_other_labels_cannot_be_compared(tmp_path, default_entry):
    other = default_entry.manifest.model_copy(update={"labels": list(reversed(default_entry.manifest.labels))})
    (tmp_path / "manifest.json").write_text(other.model_dump_json())
    with pytest.raises(ValueError, match="labels differ"):
        compare_models.open_entries([default_entry.folder, tmp_path])


def test_a_variant_names_an_entry_and_the_input_fields_it_changes():
    assert compare_models.parse_variant("1:framing=chip,face_margin=0.1", 2) == (
        1,
        {"framing": "chip", "face_margin": 0.1},
    )
    for bad in ("2:face_margin=0.1", "x:face_margin=0.1", "0", "0:"):
        with pytest.raises(ValueError, match="--variant"):
            compare_models.parse_variant(bad, 2)


def test_only_face_classifiers_are_compared(tmp_path, default_entry):
    frames = {"task": "frame-attributes", "valence_arousal": "none", "mirror_tta_margin": 1.0, "gate": None}
    other = default_entry.manifest.model_copy(update=frames)
    (tmp_path / "manifest.json").write_text(other.model_dump_json())
    with pytest.raises(ValueError, match="only face classifiers"):
        compare_models.open_entries([default_entry.folder, tmp_path])


def test_nothing_to_score_is_refused(default_entry):
    args = compare_models.get_args_parser().parse_args(["--entry", str(default_entry.folder), "--no-photos"])
    with pytest.raises(ValueError, match="nothing to score"):
        compare_models.main(args)


def test_cli_turns_a_bad_combo_into_a_usage_error(default_entry):
    cmd = [sys.executable, "-m", "benchmarks.compare_models", "--entry", str(default_entry.folder), "--combo", "0+1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "indices must be distinct and in 0..0" in done.stderr


def test_real_models_on_val_faces_and_photos(tmp_path, fer_root, photo_paths):
    rows = ["path,label,split"]
    for label in ("happy", "sad", "surprise", "neutral"):
        rows += [f"{p},{label},val" for p in sorted((fer_root / "val" / label).glob("*.jpg"))[:10]]
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    fast, default = find("fer_emotion_cnn"), find(DEFAULT_MODEL)
    argv = f"--entry {fast.folder} --entry {default.folder} --variant 0:face_margin=0.0"
    argv += f" --set fer={tmp_path / 'faces.csv'} --combo 1 --combo 0+1"
    argv += f" --photo-limit 40 --min-support 1 --grid 0.5 --output {tmp_path / 'out'}"
    args = compare_models.get_args_parser().parse_args(argv.split())
    results = compare_models.main(args)
    name = f"fer_emotion_cnn {fast.manifest.version}"
    alone, combo_alone = results[f"[1] {default.manifest.name} {default.manifest.version}"], results["mean of [1]"]
    assert list(results)[::2][:2] == [f"[0] {name}", f"[2] {name} (face_margin=0.0)"]
    assert len(results) == 5 and set(alone) == {"fer", "photos"} and "mean of [0] [1]" in results
    tight, plain = results[f"[2] {name} (face_margin=0.0)"], results[f"[0] {name}"]
    assert tight["fer"] == plain["fer"] and tight["photos"] != plain["photos"]  # the margin only cuts photos
    assert alone["fer"]["samples"] == 40 and 20 <= alone["photos"]["samples"] <= 40
    for name in ("fer", "photos"):  # one member averaged is the member itself
        assert combo_alone[name]["confusion_matrix"] == alone[name]["confusion_matrix"]
    assert alone["fer"]["accuracy"] > 0.6  # 40 easy FER2013 val faces: the shipped model reads most of them
    grid = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert len(grid) == 6  # three candidates in halves
    only_default = next(row for row in grid if row["weights"] == [0.0, 1.0, 0.0])
    assert only_default["fer"]["accuracy"] == pytest.approx(alone["fer"]["accuracy"])
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert list(saved) == list(results) and (tmp_path / "out" / "compare.png").stat().st_size > 1000
