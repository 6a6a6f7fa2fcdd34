"""benchmarks.stability: its geometry and tallies on known numbers, and a real run on a handful of faces (the
service's detector, the default model, still clips through the video pipeline) whose JSON carries every field the
docs' tables are read from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import mirror_pass, stability
from benchmarks.stability import PhotoFace, Placement


def test_benchmarks_measure_the_store_the_service_would_serve(tmp_path, monkeypatch):
    """``EMOTION_STORE_PATH`` points every benchmark at a scratch store, so a candidate is measured as served."""
    import shutil

    from benchmarks import find_entry
    from model_store.store import DEFAULT_ROOT

    shutil.copytree(DEFAULT_ROOT / "retinaface" / "1.0.0", tmp_path / "retinaface" / "1.0.1")
    manifest = tmp_path / "retinaface" / "1.0.1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "1.0.0"', '"version": "1.0.1"'))
    assert find_entry("retinaface").folder == DEFAULT_ROOT / "retinaface" / "1.0.0"
    monkeypatch.setenv("EMOTION_STORE_PATH", str(tmp_path))
    assert find_entry("retinaface").folder == tmp_path / "retinaface" / "1.0.1"
    assert find_entry("retinaface", "1.0.1").manifest.version == "1.0.1"


def test_a_box_maps_into_a_copy_and_back():
    placed = Placement(1.44, 1.44, 140, 60)
    box = (40, 50, 100, 120)
    assert placed.to_copy(box) == (198, 132, 144, 173)
    np.testing.assert_allclose(placed.to_original((197.6, 132, 144, 172.8)), box)


def test_moved_undoes_deviation():
    ref, box = (100, 80, 120, 140), (106, 75, 130, 133)
    dev = stability.deviation(box, ref)
    assert dev[0] == pytest.approx((171 - 160) / 120) and dev[2] == pytest.approx(np.log(130 / 120))
    np.testing.assert_allclose(stability.moved(ref, dev), box, atol=0.5)


def test_iou_of_known_boxes():
    assert stability.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert stability.iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert stability.iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_a_padded_crop_at_the_models_margin_is_the_crop_itself(default_entry):
    spec = default_entry.manifest.input
    crop = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    big, box = stability.padded(crop, spec.face_margin)
    np.testing.assert_array_equal(stability.crop_face(big, box, spec), crop)
    wider = stability.crop_face(big, box, spec.model_copy(update={"face_margin": spec.face_margin + 0.1}))
    assert wider.shape[0] > 100  # a larger margin takes padding


def test_agreement_tallies_labels_bands_and_box_overlap():
    p = np.array([[0.9, 0.1, 0.0], [0.5, 0.45, 0.05], [0.0, 0.8, 0.2], [0.6, 0.3, 0.1]])
    q = np.array([[0.8, 0.2, 0.0], [0.4, 0.55, 0.05], [0.0, 0.8, 0.2], [0.6, 0.3, 0.1]])
    facts = {"box_iou": [0.95, 0.8, 0.99, 0.7], "crop_outside_photo": [0.0, 0.2, 0.3, 0.05]}
    r = stability.agreement(p, q, ["a", "b", "c"], lost=1, facts=facts)
    assert r["agreement"] == 0.75 and r["lost"] == 1 and r["tv"] == pytest.approx((0.1 + 0.1) / 4)
    assert r["per_label"]["a"] == {"faces": 3, "agreement": 0.6667, "tv": pytest.approx(0.0667, abs=1e-4)}
    assert r["per_label"]["c"] is None
    assert r["per_margin_band"]["0.0-0.1"]["agreement"] == 0.0  # the 0.05 margin face changed label
    assert r["per_margin_band"]["0.5-1.0"]["faces"] == 2
    assert r["by_box_iou"]["<0.9"] == {"faces": 2, "agreement": 0.5, "tv": 0.05}
    assert r["by_crop_outside_photo"][">=0.1"] == {"faces": 2, "agreement": 0.5, "tv": 0.05}


def test_flips_and_majorities_of_label_sequences():
    tracks = [
        {"photo_label": 1, "canvas_label": 2, "s": [1, 1, 2, 1, 1]},
        {"photo_label": 0, "canvas_label": 2, "s": [2, 2, 2, 2, 2]},
    ]
    r = stability.sequence_stats(tracks, "s")
    assert r["flips_per_10_samples"] == 2.5  # two changes over eight steps
    assert r["clips_with_a_flip"] == 0.5 and r["segments_per_clip"] == 2.0
    assert r["majority_agreement"] == 0.5 and r["sample_agreement"] == 0.4
    assert r["majority_agreement_with_the_frame_as_a_still"] == 0.5


def test_noise_is_measured_around_the_median_and_from_the_photos_box():
    face = PhotoFace(0, "happy", (100, 100, 100, 100))
    face.copies = {
        "jpeg60": ((102, 100, 100, 100), Placement()),
        "canvas": ((190, 190, 220, 220), Placement(2.0, 2.0, 0, 0)),  # (95, 95, 110, 110) in the photo
        "size160": (None, Placement(0.5, 0.5)),
    }
    report, pool = stability.noise_report([face])
    assert report["per_copy"]["size160"]["lost"] == 1
    assert report["per_copy"]["jpeg60"]["median_iou"] == pytest.approx(98 / 102, abs=1e-4)
    assert len(pool) == 2 and pool[0][0] == pytest.approx(0.02)
    assert report["around_the_median_box"]["n"] == 3


@pytest.mark.slow
def test_a_small_real_run_writes_every_field(tmp_path, fer_root, photo_paths):
    argv = f"--limit 5 --val-limit 3 --clips 2 --draws 1 --margins 0.05 --output {tmp_path}"
    report = stability.main(stability.get_args_parser().parse_args(argv.split()))
    saved = json.loads((tmp_path / "stability.json").read_text())
    assert saved["model"] == report["model"] and (tmp_path / "stability.png").stat().st_size > 10_000
    assert set(saved["sets"]) == {"photos", "rafdb_val", "fer2013_val"}
    photos = saved["sets"]["photos"]
    assert set(photos["conditions"]) == {*stability.STILLS, "jitter", "canvas_jitter"}
    canvas = photos["conditions"]["canvas"]
    assert 0.0 <= canvas["agreement"] <= 1.0 and canvas["faces"] + canvas["lost"] == photos["faces"]
    assert set(canvas["per_margin_band"]) == {"0.0-0.1", "0.1-0.3", "0.3-0.5", "0.5-1.0"}
    assert set(canvas["by_box_iou"]) == {">=0.9", "<0.9"} and set(canvas["per_label"]) == set(saved["labels"])
    assert [row["margin"] for row in photos["margins"]] == pytest.approx(
        [saved["face_margin"], saved["face_margin"] + 0.05]
    )
    assert photos["tta"]["canvas"]["averaged"]["agreement"] is not None
    shapes = photos["crop_shapes"]
    assert 0.0 <= shapes["crop_outside_photo"]["median"] < 1.0 and shapes["canvas_clipped"]["agreement"] is not None
    assert shapes["canvas_square"]["agreement"] == canvas["agreement"]  # the served crop is the square one
    assert photos["accuracy"]["balanced"] is None or 0.0 <= photos["accuracy"]["balanced"] <= 1.0
    assert set(canvas["by_crop_outside_photo"]) == {">=0.1", "<0.1"}
    assert saved["sets"]["rafdb_val"]["faces"] == 3 and saved["sets"]["rafdb_val"]["accuracy"]["jitter"] is not None
    noise = saved["detector_noise"]
    assert noise["from_the_photos_box"]["n"] > 0 and set(noise["per_copy"]) >= set(stability.NOISE_ONLY)
    assert saved["tta"]["cost"]["ratio"] > 1.0
    clips = saved["clips"]
    assert clips["clips"] + clips["lost"] == 2 and clips["served_reproduced_share"] >= 0.9
    assert clips["steady_boxes_served"] is True
    assert set(clips["labels"]) == {"served", *(f"{b}_boxes_ema_{e}" for b in ("raw", "steady") for e in ("on", "off"))}
    steady = clips["box_noise_in_clips"]["steady_boxes"]
    assert steady["centre_sd"][0] <= clips["box_noise_in_clips"]["raw_boxes"]["centre_sd"][0]


def test_the_mirror_pass_benchmark_measures_every_model_and_margin(tmp_path):
    args = mirror_pass.get_args_parser().parse_args(
        ["--photos", "12", "--faces", "6", "--margins", "1", "0.3", "--output", str(tmp_path)]
    )
    rows = mirror_pass.main(args)
    assert set(rows) == {f"{m} {t}" for m in ("fer_emotion_cnn", "emotion_transfer") for t in ("1", "0.3")}
    for name, r in rows.items():
        assert r["ms_per_face_mean"] > 0 and 0 <= r["second_pass_share"] <= 1
        full = name.endswith(" 1")
        assert (r["labels_as_full_tta"] == 1.0) if full else (0.5 <= r["labels_as_full_tta"] <= 1.0)
    assert rows["fer_emotion_cnn 1"]["ratio_to_base_same_margin"] == 1.0
    assert json.loads((tmp_path / "mirror_pass.json").read_text()) == rows
