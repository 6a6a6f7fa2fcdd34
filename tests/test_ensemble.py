"""Ensembles served as one graph: the averaging itself, and published members joined, exported and served."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from model_store import Predictor, StoreEntry, normalize, read_manifest, scan
from model_store.linked import tensor_ranges
from tests.test_training import TINY, export_and_publish, run_train
from training import ensemble
from training.data import load_faces
from training.engine import Teacher, TeacherTable
from training.models.ensemble import Ensemble
from training.runs import build_model, load_config, load_store_model, load_weights


class Fixed(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor([logits]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_mean_of_each_members_calibrated_probabilities():
    a, b = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0]
    out = Ensemble([Fixed(a), Fixed(b)], [0.5, 2.0])(torch.zeros(4, 1))
    expected = (torch.softmax(torch.tensor(a) / 0.5, 0) + torch.softmax(torch.tensor(b) / 2.0, 0)) / 2
    assert out.shape == (4, 3) and torch.allclose(out.exp(), expected.expand(4, -1), atol=1e-6)


COLOUR_IN = {"height": 8, "width": 8, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}


def gray_and_colour_rows() -> torch.Tensor:
    """Row 0 a gray face (equal channels), row 1 a colour one, in the normalised input space of ``COLOUR_IN``."""
    x = torch.rand(2, 3, 8, 8)
    x[0] = x[0, :1].expand(3, -1, -1)
    return (x - 0.5) / 0.25


def test_routed_members_score_only_their_faces():
    a, b, c = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]
    model = Ensemble([Fixed(a), Fixed(b), Fixed(c)], [1.0] * 3, faces=["all", "gray", "colour"], input=COLOUR_IN)
    out = model(gray_and_colour_rows()).exp()
    sm = [torch.softmax(torch.tensor(v), 0) for v in (a, b, c)]
    assert torch.allclose(out[0], (sm[0] + sm[1]) / 2, atol=1e-6) and torch.allclose(
        out[1], (sm[0] + sm[2]) / 2, atol=1e-6
    )


def test_routing_needs_a_colour_input_and_a_member_for_every_face():
    with pytest.raises(ValueError, match="reads colour"):
        Ensemble([Fixed([0.0]), Fixed([1.0])], [1.0, 1.0], faces=["all", "gray"])
    with pytest.raises(ValueError, match="no member scores colour faces"):
        Ensemble([Fixed([0.0]), Fixed([1.0])], [1.0, 1.0], faces=["gray", "gray"], input=COLOUR_IN)


def test_a_routed_ensemble_exports_and_runs_batches_of_one_kind(tmp_path):
    """One net per face: the ONNX graph selects rows, and onnxruntime runs it on batches where a member gets none."""
    import onnxruntime as ort

    from training.export_onnx import export

    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        for _ in range(3)
    ]
    model = Ensemble(nets, [1.0] * 3, faces=["all", "gray", "colour"], input=COLOUR_IN).eval()
    x = gray_and_colour_rows()
    path = export(model, x, ["logits"], tmp_path / "routed.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1], x[1:], torch.cat([x[1:], x[:1], x[1:]])):
        with torch.inference_mode():
            expected = model(batch).numpy()
        assert np.abs(session.run(None, {"input": batch.numpy()})[0] - expected).max() < 1e-5


def test_a_gray_plane_member_scores_gray_faces_as_with_three_planes():
    """``gray_plane``, as ``training.ensemble --gray-plane`` records it: the gray-face member's input is resampled as
    one plane; its answers for gray faces stay those of the three-plane input."""
    from training.models import create_model

    conv = {"architecture": "emotion_cnn", "architecture_args": {"width": 8, "hidden": 16}, "temperature": 1.0}
    big, own = {**COLOUR_IN, "height": 56, "width": 56}, {**COLOUR_IN, "height": 48, "width": 48}
    members = [{**conv, "faces": "gray", "input": own}, {**conv, "faces": "colour"}]
    torch.manual_seed(0)
    planes = create_model("emotion_ensemble", 3, in_chans=3, members=members, input=big).eval()
    members[0]["gray_plane"] = True
    plane = create_model("emotion_ensemble", 3, in_chans=3, members=members, input=big).eval()
    plane.load_state_dict(planes.state_dict())
    assert plane.adapters[0].to_gray and not planes.adapters[0].to_gray
    for wrong in ({**members[0], "faces": "colour"}, {**members[1], "gray_plane": True}):  # not gray; no own input
        with pytest.raises(ValueError, match="gray_plane"):
            create_model("emotion_ensemble", 3, in_chans=3, members=[wrong, {**conv, "faces": "gray"}], input=big)
    x = torch.rand(2, 3, 56, 56)
    x[0] = x[0, :1].expand(3, -1, -1)  # row 0 gray, row 1 colour
    with torch.inference_mode():
        assert torch.allclose(plane((x - 0.5) / 0.25), planes((x - 0.5) / 0.25), atol=1e-5)


def test_a_gray_plane_dlib_member_reads_one_plane_through_its_folded_stem(tmp_path):
    """dlib's net routed to gray faces with ``gray_plane``: its stem conv reads the one resampled plane (the export
    holds a one-plane conv), and the ensemble's answers are those of the three-plane input, in torch and ONNX."""
    import onnx
    import onnxruntime as ort

    from training.export_onnx import export
    from training.models import create_model
    from training.models.dlib_resnet import DLIB_INPUT

    own = {k: DLIB_INPUT[k] for k in ("height", "width", "channels", "mean", "std")}
    big = {**own, "height": 120, "width": 120}
    members = [
        {"architecture": "dlib_resnet", "architecture_args": {"inner": 0.25}, "faces": "gray", "input": own},
        {"architecture": "emotion_cnn", "architecture_args": {"width": 8, "hidden": 16}, "faces": "colour"},
    ]
    torch.manual_seed(3)
    planes = create_model("emotion_ensemble", 7, in_chans=3, members=members, input=big).eval()
    members[0]["gray_plane"] = True
    plane = create_model("emotion_ensemble", 7, in_chans=3, members=members, input=big).eval()
    plane.load_state_dict(planes.state_dict())
    x = torch.rand(3, 3, 120, 120)
    x[:2] = x[:2, :1].expand(-1, 3, -1, -1)  # two gray faces, one colour
    x = (x - torch.tensor(own["mean"]).view(3, 1, 1)) / torch.tensor(own["std"]).view(3, 1, 1)
    with torch.inference_mode():
        expected = planes(x)
        assert torch.allclose(plane(x), expected, atol=1e-4)
    path = export(plane, x, ["logits"], tmp_path / "plane.onnx")
    graph = onnx.load(str(path)).graph
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    assert (32, 1, 7, 7) in weights.values() and (32, 3, 7, 7) not in weights.values()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - expected.numpy()).max() < 1e-3


class Lopsided(nn.Module):
    """Logits that depend on which half of the image is brighter, so a mirror image scores differently."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x[..., : x.shape[-1] // 2].mean((1, 2, 3)), x[..., x.shape[-1] // 2 :].mean((1, 2, 3))
        return torch.stack([left, right, left - right], 1) * 3


def test_a_mirror_member_averages_its_logits_over_the_face_and_its_mirror_image():
    x = torch.rand(5, 1, 6, 6)
    plain = Ensemble([Lopsided(), Fixed([0.0, 1.0, 0.0])], [0.5, 1.0])
    mirror = Ensemble([Lopsided(), Fixed([0.0, 1.0, 0.0])], [0.5, 1.0], mirror=[True, False])
    merged = (Lopsided()(x) + Lopsided()(x.flip(3))) / 2
    expected = (torch.softmax(merged / 0.5, 1) + torch.softmax(torch.tensor([0.0, 1.0, 0.0]), 0)) / 2
    assert torch.allclose(mirror(x).exp(), expected, atol=1e-6)
    assert torch.allclose(mirror(x), mirror(x.flip(3)), atol=1e-6)  # blind to the mirror image
    assert not torch.allclose(plain(x), plain(x.flip(3)), atol=1e-3)  # the plain member is not
    with pytest.raises(ValueError, match="one mirror flag per member"):
        Ensemble([Lopsided()], [1.0], mirror=[True, True])


def test_an_ensemble_needs_a_temperature_per_member():
    with pytest.raises(ValueError, match="one temperature per member"):
        Ensemble([Fixed([0.0])], [1.0, 2.0])


@pytest.fixture(scope="module")
def members(tmp_path_factory, fer_root):
    store = tmp_path_factory.mktemp("store")
    folders = []
    for seed in (0, 1):
        run = tmp_path_factory.mktemp(f"member{seed}")
        data = ("--data", str(fer_root), "--limit", "256", "--val-limit", "128", "--epochs", "2")
        run_train(*data, "--output", str(run), "--seed", str(seed), *TINY)
        folders.append(export_and_publish(run, store, f"member{seed}"))
    return store, folders


def test_joined_members_export_and_serve_as_their_average(members, tmp_path, fer_root):
    store, folders = members
    run = tmp_path / "ens"
    argv = ["--data", str(fer_root), "--output", str(run), "--threads", "2"]
    report = ensemble.main(ensemble.get_args_parser().parse_args([*argv, *(f"--member={f}" for f in folders)]))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["architecture"] == "emotion_ensemble" and len(cfg["architecture_args"]["members"]) == 2
    assert 0 <= report["accuracy"] <= 1 and report["temperature"] > 0
    folder = export_and_publish(run, store, "joined")
    entries = {e.manifest.name: e for e in scan(store)[0]}
    crops = list(np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8))
    parts = []
    for name in ("member0", "member1"):
        entry = entries[name]
        logits = Predictor.load(entry, tta=False).predict(crops).logits / entry.manifest.calibration_temperature
        parts.append(torch.softmax(torch.from_numpy(logits), 1))
    for backend in ("onnx", "torch"):
        joined = Predictor.load(entries["joined"], backend=backend, tta=False).predict(crops).logits
        assert np.allclose(np.exp(joined), ((parts[0] + parts[1]) / 2).numpy(), atol=1e-4)
    assert folder.name == "0.1.0"


def test_mirror_tta_for_one_member_only_is_recorded_exported_and_served(members, tmp_path, fer_root):
    """``--mirror 0 --no-tta``: member 0 scores each face and its mirror image inside the graph, member 1 the face
    alone, and the manifest turns the service's own mirror TTA off."""
    store, folders = members
    run = tmp_path / "ens_mirror"
    argv = ["--data", str(fer_root), "--output", str(run), "--threads", "2", "--mirror", "0", "--no-tta"]
    ensemble.main(ensemble.get_args_parser().parse_args([*argv, *(f"--member={f}" for f in folders)]))
    cfg = json.loads((run / "config.json").read_text())
    assert [m.get("mirror", False) for m in cfg["architecture_args"]["members"]] == [True, False]
    folder = export_and_publish(run, store, "mirror_joined")
    entry = StoreEntry(read_manifest(folder), folder)
    assert entry.manifest.mirror_tta is False
    entries = {e.manifest.name: e for e in scan(store)[0]}
    crops = list(np.random.default_rng(1).integers(0, 256, (6, 48, 48), dtype=np.uint8))
    parts = []
    for name, tta in (("member0", True), ("member1", False)):
        # member 0 with the service's mirror TTA: logits averaged over the face and its mirror image
        manifest = entries[name].manifest
        logits = Predictor.load(entries[name], tta=tta).predict(crops).logits / manifest.calibration_temperature
        parts.append(torch.softmax(torch.from_numpy(logits), 1))
    joined = Predictor.load(entry, tta=True).predict(crops).logits  # tta=True: the manifest keeps it off
    assert np.allclose(np.exp(joined), ((parts[0] + parts[1]) / 2).numpy(), atol=1e-4)
    with pytest.raises(SystemExit, match="--mirror 5"):
        ensemble.main(ensemble.get_args_parser().parse_args([*argv, "--mirror", "5", f"--member={folders[0]}"]))


def test_members_reading_another_crop_are_refused(members, tmp_path):
    _, folders = members
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((folders[1] / "manifest.json").read_text())
    manifest["input"]["face_margin"] = 0.3
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="same crop"):
        ensemble.read_members([folders[0], other])


@pytest.fixture(scope="module")
def colour_member(members, tmp_path_factory, fer_root):
    """A 64-px colour member published beside the gray ones."""
    store, _ = members
    colour = tmp_path_factory.mktemp("colour")
    data = ("--data", str(fer_root), "--limit", "256", "--val-limit", "64", "--epochs", "1")
    run_train(*data, "--output", str(colour), "--channels", "3", "--input-size", "64", *TINY)
    return export_and_publish(colour, store, "colour64")


def test_members_of_other_inputs_serve_as_their_weighted_average(members, colour_member, tmp_path, fer_root):
    """A 48-px gray member beside a 64-px colour one: the ensemble reads colour at 64 px and makes the gray member's
    input in the graph, so it serves (onnxruntime and torch) what each member gives on its own crop."""
    store, folders = members
    wide = colour_member
    run = tmp_path / "mixed"
    argv = ["--data", str(fer_root), "--output", str(run), "--weight", "1", "--weight", "3", "--no-tta"]
    ensemble.main(ensemble.get_args_parser().parse_args([*argv, f"--member={folders[0]}", f"--member={wide}"]))
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["input"]["height"], cfg["input"]["channels"]) == (64, 3)
    assert [("input" in m) for m in cfg["architecture_args"]["members"]] == [True, False]
    joined = StoreEntry(read_manifest(export_and_publish(run, store, "mixed")), store / "mixed" / "0.1.0")
    assert joined.manifest.mirror_tta is False  # scored and calibrated without the mirror image: served so
    assert Predictor.load(joined).tta is False and Predictor.load(StoreEntry(read_manifest(wide), wide)).tta
    crops = list(np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8))
    parts = []
    for folder in (folders[0], wide):
        entry = StoreEntry(read_manifest(folder), folder)
        logits = Predictor.load(entry, tta=False).predict(crops).logits / entry.manifest.calibration_temperature
        parts.append(torch.softmax(torch.from_numpy(logits), 1).numpy())
    expected = 0.25 * parts[0] + 0.75 * parts[1]
    for backend in ("onnx", "torch"):
        got = np.exp(Predictor.load(joined, backend=backend).predict(crops).logits)
        assert np.abs(got - expected).max() < 2e-3  # the gray member's own path rounds its 48-px crop to uint8


def test_frozen_members_keep_their_weights_and_statistics():
    nets = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3)) for _ in range(2)]
    model = Ensemble(nets, [1.0, 1.0], frozen=[True, False])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    assert not model.members[0].training and model.members[1].training
    nn.functional.nll_loss(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("members.0."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("members.1."))
    with pytest.raises(ValueError, match="at least one member left to train"):
        Ensemble(nets, [1.0, 1.0], frozen=[True, True])


def test_an_ensemble_trains_as_a_whole_around_a_frozen_member(members, colour_member, tmp_path, fer_root):
    """``training.train --arch emotion_ensemble``: the run reads the input the ensemble records (64-px colour here,
    not the registry's 48-px gray) and only the members not marked frozen learn."""
    _, folders = members
    joined = tmp_path / "joined"
    argv = ["--data", str(fer_root), "--output", str(joined), "--no-tta"]
    ensemble.main(ensemble.get_args_parser().parse_args([*argv, f"--member={folders[0]}", f"--member={colour_member}"]))
    arch_args = load_config(joined)["architecture_args"]
    arch_args["members"][0]["frozen"] = True
    run = tmp_path / "whole"
    data = ("--data", str(fer_root), "--limit", "128", "--val-limit", "64", "--epochs", "1", "--lr", "0.05")
    run_train(
        *data,
        "--output",
        str(run),
        "--arch",
        "emotion_ensemble",
        "--arch-args",
        json.dumps(arch_args),
        "--finetune",
        str(joined / "best.pt"),
        "--no-tta",
        "--batch-size",
        "32",
        "--threads",
        "1",
    )
    assert (load_config(run)["input"]["height"], load_config(run)["input"]["channels"]) == (64, 3)
    start = torch.load(joined / "best.pt", weights_only=True)["model"]
    end = torch.load(run / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(start[k], end[k]) for k in start if k.startswith("members.0."))
    assert not all(torch.equal(start[k], end[k]) for k in start if k.startswith("members.1."))


def test_a_member_routed_to_colour_faces_is_recorded_and_has_no_torch_program(
    members, colour_member, tmp_path, fer_root, caplog
):
    from training import quantize

    _, folders = members
    run = tmp_path / "routed"
    argv = ["--data", str(fer_root), "--output", str(run), "--faces", "1=colour", "--no-tta"]
    ensemble.main(ensemble.get_args_parser().parse_args([*argv, f"--member={folders[0]}", f"--member={colour_member}"]))
    recorded = load_config(run)["architecture_args"]
    assert [m.get("faces") for m in recorded["members"]] == [None, "colour"] and recorded["input"]["channels"] == 3
    folder = export_and_publish(run, tmp_path / "store", "routed", "--half")  # as the default: float16 weights
    assert not (folder / "model.pt2").exists() and "serve it with onnxruntime" in caplog.text
    assert {meta[2] for meta in tensor_ranges(folder / "model.safetensors").values()} >= {"F16", "F32"}
    quantize_args = ["--model", str(folder), "--data", str(fer_root), "--samples", "16", "--check-samples", "16"]
    with pytest.raises(SystemExit, match="--method minmax"):
        quantize.main(quantize.get_args_parser().parse_args(quantize_args))
    quantize.main(quantize.get_args_parser().parse_args([*quantize_args, "--method", "minmax"]))
    assert read_manifest(folder).metrics["int8"]["against_fp32_on_val"]["top1_agreement"] > 0.8
    with pytest.raises(SystemExit, match="--faces"):
        ensemble.main(
            ensemble.get_args_parser().parse_args([*argv[:-3], "--faces", "2=colour", f"--member={folders[0]}"])
        )
    with pytest.raises(SystemExit, match="--gray-plane: no member routed to gray faces"):
        both = [f"--member={folders[0]}", f"--member={colour_member}"]
        ensemble.main(ensemble.get_args_parser().parse_args([*argv, "--gray-plane", *both]))


def test_teacher_targets_blend_labels_with_its_calibrated_probabilities():
    teacher = Teacher(Fixed([1.0, 0.0, -1.0]), temperature=0.5, share=0.25)
    labels = torch.eye(3)[[0, 2]]
    out = teacher.soften(torch.zeros(2, 1), labels, "cpu", None)
    probs = torch.softmax(torch.tensor([1.0, 0.0, -1.0]) / 0.5, 0)
    assert torch.allclose(out, 0.75 * labels + 0.25 * probs, atol=1e-6)


def kl_to(teacher_folder, student_run, images) -> float:
    teacher, manifest = load_store_model(teacher_folder)
    student = load_weights(build_model(load_config(student_run)), student_run / "best.pt")
    x = torch.from_numpy(normalize(images, manifest.input))
    with torch.no_grad():
        p = torch.softmax(teacher(x) / manifest.calibration_temperature, 1)
        log_q = torch.log_softmax(student(x), 1)
    return float((p * (p.clamp_min(1e-8).log() - log_q)).sum(1).mean())


def test_a_distilled_student_ends_closer_to_its_teacher(members, tmp_path, fer_root):
    _, folders = members
    common = ["--data", str(fer_root), "--limit", "256", "--val-limit", "64", "--epochs", "4", "--no-augment"]
    common += ["--label-smoothing", "0", "--seed", "5", *TINY]
    run_train(*common, "--output", str(tmp_path / "plain"))
    run_train(*common, "--output", str(tmp_path / "student"), "--teacher", str(folders[0]), "--distill", "1.0")
    cfg = json.loads((tmp_path / "student" / "config.json").read_text())
    assert cfg["args"]["teacher"] == [str(folders[0])]
    images = load_faces(fer_root, "train", load_store_model(folders[0])[1].input, None, 256).images
    distilled, plain = kl_to(folders[0], tmp_path / "student", images), kl_to(folders[0], tmp_path / "plain", images)
    print(f"KL(teacher || student): distilled {distilled:.4f}, plain {plain:.4f}")
    assert distilled < 0.7 * plain


def test_a_table_teacher_blends_each_rows_own_probabilities():
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]], np.float32)
    table = TeacherTable(probs, share=0.5)
    out = table.blend(torch.eye(3)[[0, 0]], np.array([1, 0]))
    assert torch.allclose(out, torch.tensor([[0.5, 0.1, 0.4], [0.75, 0.25, 0.0]]))


def test_teachers_of_another_input_score_every_training_row_once(members, tmp_path, fer_root):
    """Two gray 48-px teachers for a colour student: the mean of their probabilities, each from its own reading of
    each training row (through the Predictor, as served), is kept in the run folder and the student trains on it."""
    _, folders = members
    student = tmp_path / "student"
    common = ["--data", str(fer_root), "--limit", "256", "--val-limit", "64", "--epochs", "1", "--channels", "3"]
    teachers = ["--teacher", str(folders[0]), "--teacher", str(folders[1])]
    run_train(*common, *TINY, "--output", str(student), *teachers, "--distill", "0.5")
    expected = 0
    for folder in folders[:2]:
        entry = StoreEntry(read_manifest(folder), folder)
        rows = load_faces(fer_root, "train", entry.manifest.input, None, 256)
        expected = expected + Predictor.load(entry).predict_faces(rows.images).probabilities / 2
    kept = np.load(student / "teacher_probs.npy")
    assert kept.shape == (256, 7) and np.allclose(kept, expected, atol=1e-5)
    assert json.loads((student / "config.json").read_text())["input"]["channels"] == 3
