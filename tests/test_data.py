"""Dataset loaders: ImageFolder, the FER2013 CSV and the path,label,split manifest, with bad rows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model_store import InputSpec
from training.data import DatasetError, available_splits, load_faces

SPEC = InputSpec(height=48, width=48)
LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def write_face(path, value: int = 128, size: int = 60) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size), value, np.uint8))


def test_image_folder_maps_label_aliases_and_resizes(tmp_path):
    write_face(tmp_path / "train" / "anger" / "a.png", 10)
    write_face(tmp_path / "train" / "happiness" / "b.jpg", 200)
    write_face(tmp_path / "val" / "sadness" / "c.png")
    data = load_faces(tmp_path, "train", SPEC, LABELS)
    assert data.images.shape == (2, 48, 48, 1)
    assert sorted(data.targets.tolist()) == [LABELS.index("angry"), LABELS.index("happy")]
    assert available_splits(tmp_path) == {"train", "val"}


def test_image_folder_skips_labels_the_model_lacks(tmp_path):
    write_face(tmp_path / "contempt" / "a.png")
    write_face(tmp_path / "happy" / "b.png")
    assert load_faces(tmp_path, None, SPEC, LABELS).targets.tolist() == [LABELS.index("happy")]


def test_fer_csv_reads_pixels_and_usage_splits(tmp_path):
    pixels = " ".join(["7"] * 48 * 48)
    csv = tmp_path / "fer.csv"
    csv.write_text(f"emotion,pixels,Usage\n3,{pixels},Training\n0,{pixels},PublicTest\n6,{pixels},Training\n")
    train = load_faces(csv, "train", SPEC, LABELS)
    assert train.targets.tolist() == [3, 6]
    assert load_faces(csv, "val", SPEC, LABELS).targets.tolist() == [0]
    assert available_splits(csv) == {"train", "val"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3,1 2 3,Training", ":3: 3 pixel values"),
        ("9,{p},Training", ":3: emotion 9"),
        ("x,{p},Training", ":3: emotion must"),
    ],
)
def test_fer_csv_bad_row_names_the_row(tmp_path, row, message):
    pixels = " ".join(["7"] * 48 * 48)
    csv = tmp_path / "fer.csv"
    csv.write_text(f"emotion,pixels,Usage\n3,{pixels},Training\n{row.format(p=pixels)}\n")
    with pytest.raises(DatasetError, match=message):
        load_faces(csv, "train", SPEC, LABELS)


def test_manifest_csv_reads_paths_splits_and_valence_arousal(tmp_path):
    write_face(tmp_path / "img" / "a.png")
    write_face(tmp_path / "img" / "b.png")
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,split,valence,arousal\nimg/a.png,happiness,train,0.8,0.4\nimg/b.png,sad,val,,\n")
    train = load_faces(csv, "train", SPEC, LABELS)
    assert train.targets.tolist() == [LABELS.index("happy")]
    assert np.allclose(train.valence_arousal, [[0.8, 0.4]])
    assert np.isnan(load_faces(csv, "val", SPEC, LABELS).valence_arousal).all()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("img/missing.png,happy,train,,", ":3: file 'img/missing.png' does not exist"),
        ("img/a.png,happy,train,2.0,0", ":3: valence '2.0' must lie in"),
        (",happy,train,,", ":3: empty path"),
    ],
)
def test_manifest_csv_bad_row_names_the_row(tmp_path, row, message):
    write_face(tmp_path / "img" / "a.png")
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,split,valence,arousal\nimg/a.png,happy,train,,\n{row}\n")
    with pytest.raises(DatasetError, match=message):
        load_faces(csv, "train", SPEC, LABELS)


def test_unknown_csv_header_is_a_clear_error(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("foo,bar\n1,2\n")
    with pytest.raises(DatasetError, match="unknown CSV header"):
        load_faces(csv, None, SPEC, LABELS)


def test_undecodable_image_is_named(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        load_faces(tmp_path, None, SPEC, LABELS)


def test_make_manifest_keeps_a_val_split_and_stratifies_a_pool(tmp_path):
    """A set with train/ and val/ keeps them; a train-only set gets a seeded per-label share held out."""
    from training import make_manifest

    for i in range(3):
        write_face(tmp_path / "a" / "train" / "happy" / f"{i}.png")
    write_face(tmp_path / "a" / "val" / "sad" / "v.png")
    for label, n in (("happy", 20), ("disgust", 10), ("fear", 1)):
        for i in range(n):
            write_face(tmp_path / "b" / "train" / label / f"{label}{i}.png")
    out = tmp_path / "out"
    args = make_manifest.get_args_parser().parse_args(
        ["--source", f"a={tmp_path / 'a'}", "--source", f"b={tmp_path / 'b'}", "--output", str(out)]
    )
    rows = make_manifest.main(args)
    b_val = sorted(r["label"] for r in rows if r["source"] == "b" and r["split"] == "val")
    assert b_val == ["disgust"] + ["happy"] * 2  # 10% of each label; a lone fear face stays in train
    assert [r["label"] for r in rows if r["source"] == "a" and r["split"] == "val"] == ["sad"]
    assert len(load_faces(out / "manifest.csv", "train", SPEC, LABELS)) == 3 + 18 + 9 + 1
    assert len(load_faces(out / "b.csv", "val", SPEC, LABELS)) == 3
    assert make_manifest.main(args) == rows  # the same seed, the same split
    args.repeat = ["b=3"]
    repeated = make_manifest.main(args)
    assert sum(r["source"] == "b" and r["split"] == "train" for r in repeated) == 3 * 28
    assert sum(r["source"] == "b" and r["split"] == "val" for r in repeated) == 3
