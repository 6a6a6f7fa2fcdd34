"""benchmarks.candidate: issue 32's rule for a new default, and a short real run that judges a copy of the default
against itself in a scratch store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import candidate
from model_store import find

STORE = Path(__file__).resolve().parents[1] / "model_store"


def rows(raf: float, fer: float, photos_balanced: float) -> dict[str, dict]:
    return {
        "rafdb_val": {"accuracy": raf},
        "fer2013_val": {"accuracy": fer},
        "photos": {"balanced_accuracy": photos_balanced},
    }


def test_the_rule_allows_half_a_point_on_val_nothing_on_the_photos_and_needs_a_cheaper_model():
    base = rows(0.8687, 0.6737, 0.5632)
    ms = {"fast": 1.6, "base": 5.5, "candidate": 5.2}
    judged = candidate.verdict(base, rows(0.8646, 0.6729, 0.5666), ms)
    assert judged == {
        "rafdb_val within 0.5 point": True,
        "fer2013_val within 0.5 point": True,
        "photos' balanced accuracy no lower": True,
        "cheaper per face than the base": True,
        "per face at most 2.5x the fast model": False,  # 5.2 > 4.0
    }
    worse = candidate.verdict(base, rows(0.8630, 0.6737, 0.5631), {"fast": 2.2, "base": 5.5, "candidate": 5.5})
    assert not worse["rafdb_val within 0.5 point"] and worse["fer2013_val within 0.5 point"]
    assert not worse["photos' balanced accuracy no lower"] and not worse["cheaper per face than the base"]
    assert worse["per face at most 2.5x the fast model"]  # 5.5 = 2.5 x 2.2


@pytest.mark.usefixtures("photo_paths")
def test_a_copy_of_the_default_is_judged_equal_to_it(tmp_path, monkeypatch, capsys):
    default = find("emotion_transfer")
    store = tmp_path / "store"
    for name in ("fer_emotion_cnn", "retinaface", "emotion_transfer"):
        (store / name).mkdir(parents=True)
    for entry in (find("fer_emotion_cnn"), find("retinaface"), default):
        (store / entry.manifest.name / entry.manifest.version).symlink_to(entry.folder)
    copy = store / "emotion_transfer" / "9.0.0"  # the same graph under a newer version: the candidate
    copy.mkdir()
    for path in default.folder.iterdir():
        if path.name != "manifest.json":
            (copy / path.name).symlink_to(path)
    manifest = json.loads((default.folder / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": "9.0.0"}))
    monkeypatch.setenv("EMOTION_STORE_PATH", str(store))

    args = [
        "--version",
        "9.0.0",
        "--photos-limit",
        "24",
        "--val-limit",
        "40",
        "--faces",
        "4",
        "--output",
        str(tmp_path),
    ]
    out = candidate.main(candidate.get_args_parser().parse_args(args))

    base, cand = out["accuracy"][default.manifest.version], out["accuracy"]["9.0.0"]
    assert base == cand and set(base) == {"photos", "rafdb_val", "fer2013_val"}
    assert 0 < base["rafdb_val"]["accuracy"] <= 1 and set(base["rafdb_val"]["recall"]) <= set(default.manifest.labels)
    assert set(out["ms_per_face"]) == {"fer_emotion_cnn", default.manifest.version, "9.0.0"}
    assert out["verdict"]["rafdb_val within 0.5 point"] and out["verdict"]["photos' balanced accuracy no lower"]
    assert json.loads((tmp_path / "candidate.json").read_text())["verdict"] == out["verdict"]
    assert (tmp_path / "candidate.png").exists() and "per photo face" in capsys.readouterr().out


def test_the_photos_balanced_accuracy_counts_labels_with_enough_photos():
    targets = np.array([0] * 100 + [1] * 100 + [2] * 3)
    pred = np.array([0] * 100 + [0] * 50 + [1] * 50 + [2] * 3)  # label 1 half right, label 2 all right
    assert candidate.mean_recall(pred, targets, 100) == pytest.approx(0.75)  # label 2 has too few photos
    assert candidate.mean_recall(pred[-6:], targets[-6:], 100) == pytest.approx(1.0)  # none has 100: every label
