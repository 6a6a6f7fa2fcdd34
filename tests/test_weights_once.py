"""Weights once: an ensemble member that is another store entry is linked, not copied; every reader of the store
(the backends, the training side, copies, quantisation, imports, a self-contained export) handles the shared file."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from model_store import Predictor, StoreError, copy_entry, find, publish
from model_store.export_graph import export_graph
from model_store.linked import entry_state, external_locations, tensor_ranges
from tests.factories import manifest
from training.artifacts import write_artifacts
from training.export_onnx import export
from training.export_slim import save_slim
from training.link_members import link
from training.models import create_model
from training.runs import example_input, load_store_model

SPEC = {"height": 48, "width": 48, "channels": 1, "mean": [0.5], "std": [0.25]}
ARGS = {"width": 4, "hidden": 16}


def small_cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("emotion_cnn", 7, **ARGS).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    """Store ``a`` 1.0.0 (a small CNN) and ``ens`` 1.0.0, an ensemble of ``a`` and a CNN the store lacks, exported
    as the default was (float16 weights, graph reading them); returns the ensemble's outputs and state before the
    link, then links it."""
    root = tmp_path_factory.mktemp("weights_once")
    store, a, b = root / "store", small_cnn(0), small_cnn(1)
    artifacts, _ = write_artifacts(a, manifest(input=SPEC).input, ["logits"], root / "a", {})
    publish(manifest(name="a", input=SPEC, architecture_args=ARGS), artifacts, store)
    members = [
        {"architecture": "emotion_cnn", "architecture_args": ARGS, "temperature": t, "source": s}
        for t, s in ((0.8, "a:1.0.0"), (1.2, "b:1.0.0"))
    ]
    ens = create_model("emotion_ensemble", 7, members=members).eval()
    ens.members[0].load_state_dict(a.state_dict())
    ens.members[1].load_state_dict(b.state_dict())
    weights = root / "ens" / "model.safetensors"
    weights.parent.mkdir()
    save_slim(ens, weights, {}, half=True)
    ens.load_state_dict(load_file(weights))  # what the entry holds: float16-rounded kernels
    graph = export(
        ens, example_input(manifest(input=SPEC).input, 2), ["logits"], root / "ens" / "model.onnx", 18, weights
    )
    m = manifest(name="ens", input=SPEC, architecture="emotion_ensemble", architecture_args={"members": members})
    entry = publish(m, {"weights": weights, "onnx": graph}, store)
    x = example_input(entry.manifest.input, 6, seed=2).numpy()
    before = Predictor.load(entry, backend="onnx").run(x)["logits"]
    state = load_file(entry.path("weights"))
    links = link(entry.folder)
    return find("ens", root=store), links, x, before, state


def test_the_member_is_linked_and_no_longer_copied(linked):
    entry, links, _, _, state = linked
    assert [(lk.path, lk.prefix) for lk in links] == [("a/1.0.0/model.safetensors", "members.0.")]
    assert (
        entry.manifest.links == links and links[0].sha256 == find("a", root=entry.root).manifest.file("weights").sha256
    )
    assert set(links[0].float16) == {
        n.removeprefix("members.0.")
        for n, t in state.items()
        if n.startswith("members.0.") and t.dtype == torch.float16
    }
    own = tensor_ranges(entry.path("weights"))
    assert own and not [n for n in own if n.startswith("members.0.")]  # member 1 (not in the store) stays
    assert [n for n in own if n.startswith("members.1.")]
    assert set(external_locations(entry.path("onnx"))) == {"model.safetensors", "../../a/1.0.0/model.safetensors"}


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_outputs_and_state_are_those_of_the_copy(linked, backend):
    entry, _, x, before, state = linked
    runner = Predictor.load(entry, backend=backend)
    assert runner.runner.backend == "onnx"  # no torch program: the fallback reads the linked file too
    assert float(np.abs(runner.run(x)["logits"] - before).max()) == 0.0
    held = entry_state(entry)
    assert held.keys() == state.keys()
    assert all(held[k].dtype == state[k].dtype and torch.equal(held[k], state[k]) for k in state)
    model, _ = load_store_model(entry.folder)  # teachers and members on the training side
    with torch.inference_mode():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), before, atol=1e-5)


def test_copies_carry_the_linked_entry_and_changes_are_caught(linked, tmp_path):
    entry, _, x, before, _ = linked
    copied = copy_entry(entry, tmp_path / "copy")
    assert (tmp_path / "copy" / "a" / "1.0.0" / "manifest.json").is_file()
    assert float(np.abs(Predictor.load(copied, backend="onnx").run(x)["logits"] - before).max()) == 0.0
    alone = tmp_path / "alone" / "ens" / "1.0.0"
    shutil.copytree(entry.folder, alone)
    with pytest.raises(StoreError, match=r"reads the weights of a:1\.0\.0 .*which this store lacks: copy that entry"):
        Predictor.load(find("ens", root=tmp_path / "alone"), backend="onnx")
    member = tmp_path / "copy" / "a" / "1.0.0" / "model.safetensors"
    data = bytearray(member.read_bytes())
    data[-1] ^= 0xFF
    member.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"checksum mismatch for model\.safetensors of a:1\.0\.0"):
        Predictor.load(find("ens", root=tmp_path / "copy"), backend="onnx")


def test_a_self_contained_graph_runs_alone(linked, tmp_path):
    entry, _, x, before, _ = linked
    out = tmp_path / "elsewhere" / "ens.onnx"
    assert export_graph(entry, out) == 0.0
    assert list(out.parent.iterdir()) == [out] and not external_locations(out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert float(np.abs(session.run(None, {"input": x})[0] - before).max()) == 0.0


def test_quantize_reads_the_linked_graph(linked, fer_root, tmp_path):
    from training import quantize

    entry, *_ = linked
    store = tmp_path / "q"
    copied = copy_entry(entry, store)
    argv = ["--model", str(copied.folder), "--data", str(fer_root), "--samples", "16", "--check-samples", "16"]
    int8 = quantize.main(quantize.get_args_parser().parse_args(argv))
    assert int8["against_fp32_on_val"]["top1_agreement"] > 0.8
    assert Predictor.load(find("ens", root=store), backend="onnx-int8").runner.backend == "onnx-int8"


def test_the_shipped_default_links_its_first_member(default_entry):
    (link_,) = default_entry.manifest.links
    assert (link_.path, link_.prefix) == ("fer_emotion_cnn/1.3.0/model.safetensors", "members.0.")
    member = find("fer_emotion_cnn", "1.3.0")
    assert link_.sha256 == member.manifest.file("weights").sha256
    assert not [n for n in tensor_ranges(default_entry.path("weights")) if n.startswith("members.0.")]
    graph = onnx.load(str(default_entry.path("onnx")), load_external_data=False).graph
    assert {e.value for i in graph.initializer for e in i.external_data if e.key == "location"} == {
        "model.safetensors",
        "../../fer_emotion_cnn/1.3.0/model.safetensors",
    }


def test_a_torch_program_reads_left_out_weights_from_the_linked_file(linked, tmp_path):
    """Float32 weights (no ``--half``): the program leaves out every weight the safetensors holds, so after the link
    it reads member 0's from the other entry's file."""
    from training.export_slim import export_program

    entry, *_ = linked
    store = copy_entry(find("a", root=entry.root), tmp_path / "store").root
    ens = create_model("emotion_ensemble", 7, members=entry.manifest.architecture_args["members"]).eval()
    ens.members[0].load_state_dict(entry_state(find("a", root=store)))
    weights = tmp_path / "export" / "model.safetensors"
    weights.parent.mkdir()
    save_slim(ens, weights, {})
    spec = manifest(input=SPEC).input
    artifacts = {
        "weights": weights,
        "onnx": export(ens, example_input(spec, 2), ["logits"], weights.with_name("model.onnx"), 18, weights),
        "torch_program": export_program(ens, spec, weights.with_name("model.pt2"), weights),
    }
    m = manifest(
        name="ens32", input=SPEC, architecture="emotion_ensemble", architecture_args=entry.manifest.architecture_args
    )
    published = publish(m, artifacts, store)
    x = example_input(spec, 4, seed=5).numpy()
    before = {b: Predictor.load(published, backend=b).run(x)["logits"] for b in ("onnx", "torch")}
    (lk,) = link(published.folder)
    assert lk.float16 == [] and lk.prefix == "members.0."
    relinked = find("ens32", root=store)
    for backend, expected in before.items():
        predictor = Predictor.load(relinked, backend=backend)
        assert predictor.runner.backend == backend
        assert float(np.abs(predictor.run(x)["logits"] - expected).max()) == 0.0


def test_an_onnxruntime_without_in_memory_files_is_told_what_it_needs(linked):
    from model_store.runtime import hand_over
    from model_store.store import read_linked

    entry, *_ = linked
    with pytest.raises(StoreError, match=r"needs onnxruntime >= 1\.23 .*backend onnx-int8"):
        hand_over(object(), entry.path("onnx"), entry.manifest, read_linked(entry))


@pytest.mark.parametrize("self_contained", [False, True])
def test_export_onnx_self_contained_embeds_the_weights(tmp_path, self_contained):
    import json

    from training import export_onnx

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    labels = manifest().labels
    cfg = {"architecture": "emotion_cnn", "architecture_args": ARGS, "labels": labels, "input": SPEC}
    (run / "config.json").write_text(json.dumps({**cfg, "outputs": ["logits"]}))
    save_slim(small_cnn(3), run / "export" / "model.safetensors", {})
    argv = ["--run", str(run)] + (["--self-contained"] if self_contained else [])
    out, diff = export_onnx.main(export_onnx.get_args_parser().parse_args(argv))
    assert diff < 1e-4 and external_locations(out) == ([] if self_contained else ["model.safetensors"])
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    shutil.copyfile(out, alone)
    x = example_input(manifest(input=SPEC).input, 2).numpy()
    if self_contained:
        assert ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    else:
        with pytest.raises(Exception, match="External data path"):  # what a copy of the linked graph meets
            ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
