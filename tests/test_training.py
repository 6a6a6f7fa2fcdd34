"""Training commands end to end on tiny subsets: train, resume, reports, export, publish, evaluate, serve."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from model_store import Predictor, scan, verify_file
from training import evaluate, export_onnx, export_slim, make_clips, publish, train
from training.augment import AugmentCfg, augment_batch
from training.runs import load_config

TINY = ["--arch-args", '{"width": 4, "hidden": 8}', "--batch-size", "32", "--threads", "2"]


def run_train(*argv: str) -> dict:
    return train.main(train.get_args_parser().parse_args(list(argv)))


def export_and_publish(run: Path, store: Path, name: str, *slim_args: str) -> Path:
    export_slim.main(export_slim.get_args_parser().parse_args(["--run", str(run), "--torch-program", *slim_args]))
    _, diff = export_onnx.main(export_onnx.get_args_parser().parse_args(["--run", str(run)]))
    assert diff < 1e-4
    publish.main(
        publish.get_args_parser().parse_args(
            ["--run", str(run), "--name", name, "--version", "0.1.0", "--store", str(store)]
        )
    )
    return store / name / "0.1.0"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fer_root) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_train(
        "--data", str(fer_root), "--limit", "256", "--val-limit", "128", "--epochs", "2", "--output", str(out), *TINY
    )
    return out


def test_finetune_starts_from_the_given_weights(tiny_run, tmp_path, fer_root):
    out = tmp_path / "ft"
    run_train(
        *("--data", str(fer_root), "--limit", "64", "--val-limit", "32", "--epochs", "1", "--output", str(out)),
        *("--finetune", str(tiny_run / "best.pt"), "--lr", "0", "--weight-decay", "0", "--warmup-epochs", "0"),
        *TINY,
    )
    source = torch.load(tiny_run / "best.pt", weights_only=True)["model"]
    tuned = torch.load(out / "best.pt", weights_only=True)["model"]
    weights = [k for k in source if k.endswith(".weight")]  # with lr 0 only BatchNorm statistics may move
    assert weights and all(torch.equal(source[k], tuned[k]) for k in weights)


def test_finetune_prefix_takes_one_member_of_an_ensembles_weights(tiny_run, tmp_path):
    from safetensors.torch import save_file

    from training.runs import build_model, load_weights

    source = torch.load(tiny_run / "best.pt", weights_only=True)["model"]
    ensemble = tmp_path / "ensemble.safetensors"
    save_file(
        {**{f"members.1.{k}": v.contiguous() for k, v in source.items()}, "members.0.other": torch.zeros(2)}, ensemble
    )
    model = build_model(load_config(tiny_run))
    load_weights(model, ensemble, "members.1.")
    assert all(torch.equal(source[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"no tensors under 'members\.2\.'"):
        load_weights(model, ensemble, "members.2.")


def test_training_writes_reports_and_resolved_config(tiny_run):
    for name in (
        "config.json",
        "metrics.json",
        "val.json",
        "val_per_class.json",
        "val_confusion.png",
        "learning_curves.png",
        "checkpoint.pt",
        "best.pt",
    ):
        assert (tiny_run / name).is_file(), name
    cfg = load_config(tiny_run)
    assert cfg["dataset"]["train_samples"] == 256 and cfg["input"]["height"] == 48
    report = json.loads((tiny_run / "val.json").read_text())
    assert set(report["per_class"]) == set(cfg["labels"]) and 0 <= report["accuracy"] <= 1 and report["temperature"] > 0
    assert len(json.loads((tiny_run / "metrics.json").read_text())["history"]) == 2


def test_fp16_autocast_trains_with_gradient_scaling(tmp_path, fer_root):
    result = run_train(
        "--data",
        str(fer_root),
        "--limit",
        "64",
        "--val-limit",
        "32",
        "--epochs",
        "1",
        "--amp",
        "fp16",
        "--output",
        str(tmp_path),
        *TINY,
    )
    assert result["finished"] and json.loads((tmp_path / "config.json").read_text())["amp"] == "float16"


def test_consistency_trains_on_two_framings_and_refuses_mixing(tmp_path, fer_root):
    common = ["--data", str(fer_root), "--limit", "64", "--val-limit", "32", "--epochs", "1", *TINY]
    result = run_train(*common, "--consistency", "1.0", "--output", str(tmp_path))
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert result["finished"] and 0 <= history[0]["train_accuracy"] <= 1  # a face counts once, not once per view
    with pytest.raises(ValueError, match="mixup and CutMix"):
        run_train(*common, "--consistency", "1.0", "--mixup", "0.2", "--output", str(tmp_path / "mixed"))


def test_checkpoints_hold_weights_only(tiny_run):
    ckpt = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch"} <= set(ckpt)


def test_resume_continues_from_last_epoch(tmp_path, fer_root):
    common = ["--data", str(fer_root), "--limit", "128", "--val-limit", "64", "--output", str(tmp_path), *TINY]
    assert run_train(*common, "--epochs", "3", "--time-limit", "0")["epoch"] == 1
    result = run_train(*common, "--epochs", "3", "--resume")
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert result["finished"] and [h["epoch"] for h in history] == [1, 2, 3]


def test_export_publish_gives_a_servable_store_entry(tiny_run, tmp_path, make_client, happy_face_bytes):
    folder = export_and_publish(tiny_run, tmp_path / "store", "tiny")
    entries, errors = scan(tmp_path / "store")
    assert not errors and entries[0].manifest.metrics["val"]["samples"] == 128
    for role in ("weights", "onnx", "torch_program"):
        assert verify_file(entries[0], role).parent == folder
    for backend in ("onnx", "torch"):
        client = make_client(store_path=tmp_path / "store", default_model="tiny", backend=backend)
        response = client.post("/predict/face", files={"file": ("f.jpg", happy_face_bytes, "image/jpeg")})
        assert response.status_code == 200 and abs(sum(response.json()["emotions"].values()) - 1) < 1e-4


def test_publish_overrides_the_crop_the_service_cuts(tiny_run, tmp_path):
    """A model measured best on another crop than it was trained on ships with that crop in its manifest."""
    export_slim.main(export_slim.get_args_parser().parse_args(["--run", str(tiny_run)]))
    export_onnx.main(export_onnx.get_args_parser().parse_args(["--run", str(tiny_run)]))
    argv = ["--run", str(tiny_run), "--name", "t", "--version", "0.2.0", "--store", str(tmp_path)]
    crop = ["--framing", "chip", "--face-margin", "0.25", "--tta-margin", "0.3"]
    entry = publish.main(publish.get_args_parser().parse_args([*argv, *crop]))
    assert (entry.manifest.input.framing, entry.manifest.input.face_margin) == ("chip", 0.25)
    assert entry.manifest.mirror_tta_margin == 0.3 and Predictor.load(entry).tta_margin == 0.3  # served so
    for bad in (["--framing", "square"], ["--tta-margin", "1.5"]):
        with pytest.raises(SystemExit):
            publish.get_args_parser().parse_args([*argv, *bad])
    gated = [*argv[:5], "0.3.0", *argv[6:], "--gate-output", "member_probs", "--gate-margin", "0.9"]
    assert publish.main(publish.get_args_parser().parse_args(gated)).manifest.gate.margin == 0.9
    with pytest.raises(SystemExit, match="go together"):
        publish.main(publish.get_args_parser().parse_args(gated[:-2]))


def test_evaluate_command_reports_on_a_dataset(tiny_run, tmp_path, fer_root):
    folder = export_and_publish(tiny_run, tmp_path / "store", "tiny")
    args = ["--model", str(folder), "--data", str(fer_root), "--limit", "64", "--output", str(tmp_path / "eval")]
    metrics = evaluate.main(evaluate.get_args_parser().parse_args([*args, "--robustness"]))
    assert metrics["samples"] == 64 and (tmp_path / "eval" / "eval_confusion.png").is_file()
    assert set(metrics["robustness"]) == set(evaluate.PERTURBATIONS) and metrics["robustness"]["clean"] == {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "recall": {label: c["recall"] for label, c in metrics["per_class"].items()},
    }
    assert (tmp_path / "eval" / "eval_robustness.png").is_file()


@pytest.mark.parametrize("name", list(evaluate.PERTURBATIONS))
def test_every_perturbation_keeps_the_face_shape_and_dtype(name):
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
    out = evaluate.degrade(faces, name)
    assert all(f.shape == (48, 48, 1) and f.dtype == np.uint8 for f in out)
    assert (name == "clean") == all(np.array_equal(a, b) for a, b in zip(faces, out, strict=True))


def test_augmentation_shows_some_faces_at_low_resolution():
    faces = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 48, 48, 1), dtype=np.uint8))
    off = {"hflip": 0, "rotate_deg": 0, "shift": 0, "scale": 0, "brightness": 0, "contrast": 0, "erase_prob": 0}
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(faces, AugmentCfg(**off, lowres_prob=0.5, lowres_min=16), gen)
    changed = [not torch.allclose(o, f.float(), atol=1e-3) for o, f in zip(out, faces, strict=True)]
    assert 16 <= sum(changed) <= 48  # about half, each smoothed: high-frequency noise cannot survive


def test_multitask_model_learns_valence_arousal_head(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["path,label,split,valence,arousal"]
    for i in range(48):
        label, va = ("happy", (0.8, 0.5)) if i % 2 else ("sad", (-0.6, -0.3))
        face = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8) + (150 if label == "happy" else 0)
        cv2.imwrite(str(tmp_path / f"{i}.png"), face.astype(np.uint8))
        rows.append(f"{i}.png,{label},{'val' if i < 12 else 'train'},{va[0]},{va[1]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = run_train(
        "--data",
        str(tmp_path / "m.csv"),
        "--arch",
        "resnet18_multitask",
        "--arch-args",
        '{"width": 8}',
        "--input-size",
        "64",
        "--labels",
        "happy,sad",
        "--epochs",
        "3",
        "--output",
        str(out),
        "--batch-size",
        "12",
        "--lr",
        "0.01",
        "--no-augment",
    )
    assert set(result["valence_arousal"]) == {"valence", "arousal"}
    folder = export_and_publish(out, tmp_path / "store", "multi")
    manifest = scan(tmp_path / "store")[0][0].manifest
    assert (
        folder.is_dir()
        and manifest.valence_arousal == "predicted"
        and manifest.outputs == ["logits", "valence_arousal"]
    )


def test_clip_model_trains_from_clip_manifest_and_serves_video(tmp_path, fer_root, make_client, face_photo):
    from benchmarks.synth import Appearance, write_clip

    make_clips.main(
        make_clips.get_args_parser().parse_args(
            ["--source", str(fer_root), "--output", str(tmp_path / "clips"), "--per-class", "2", "--frames", "8"]
        )
    )
    out = tmp_path / "run"
    run_train(
        "--data",
        str(tmp_path / "clips" / "manifest.csv"),
        "--arch",
        "r3d18_bilstm",
        "--arch-args",
        '{"width": 4, "hidden": 8}',
        "--epochs",
        "1",
        "--batch-size",
        "7",
        "--output",
        str(out),
    )
    folder = export_and_publish(out, tmp_path / "store", "clip")
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    # linked to model.safetensors (its 3D convolutions run unfused since drop_zero_conv_bias), not the fallback
    assert any(i.data_location == onnx.TensorProto.EXTERNAL for i in graph.initializer)
    video = write_clip(tmp_path / "v.mp4", [Appearance(face_photo, 0, 3, (100, 60))], duration=3, fps=10)
    client = make_client(store_path=tmp_path / "store", default_model="clip")
    response = client.post("/predict/video", files={"file": ("v.mp4", video.read_bytes(), "video/mp4")})
    body = response.json()
    assert response.status_code == 200, body
    assert body["clips"] and all(c["end"] >= c["start"] for c in body["clips"])
    assert abs(sum(body["summary"]["emotions"].values()) - 1) < 1e-3


def test_channels_override_trains_a_colour_model_with_a_mean_and_std_per_channel(tmp_path, fer_root):
    out = tmp_path / "rgb"
    run_train(
        *("--data", str(fer_root), "--limit", "64", "--val-limit", "32", "--epochs", "1", "--output", str(out)),
        *("--channels", "3", "--input-size", "32"),
        *TINY,
    )
    spec = load_config(out)["input"]
    assert (spec["channels"], spec["height"], len(spec["mean"]), len(spec["std"])) == (3, 32, 3, 3)
    first = torch.load(out / "best.pt", weights_only=True)["model"]["features.0.0.weight"]
    assert first.shape[1] == 3  # the first convolution takes three channels
