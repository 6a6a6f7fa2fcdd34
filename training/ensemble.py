"""Join published face classifiers into one ensemble run: ``python -m training.ensemble --member DIR ... --output R``.

The members (store folders, e.g. ``model_store/fer_emotion_cnn/1.3.0``) must share labels and the crop they read
(framing and margin); their input sizes, channels and normalisation may differ. The ensemble reads the largest
member's input (or ``--input-from``'s) and makes each other member's from it inside the graph
(``training.models.adapt``), so 1.3.0's 48-px gray net can stand beside a 112-px colour one. The result is
a run folder like ``training.train`` writes (``config.json``, ``best.pt``, ``val.json`` with a temperature fitted on
val for the whole), so ``export_slim``, ``export_onnx`` and ``publish`` ship it as one graph: the service runs it
like any other model, with one preprocessing and one forward pass per batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch

from model_store import InputSpec, Manifest, StoreEntry, read_manifest
from model_store.linked import entry_state
from training.engine import resolve_amp
from training.models.ensemble import FACES
from training.runs import SHARED_INPUT, build_model, require_compatible_labels
from training.tasks import task_for
from training.train import get_args_parser as train_parser
from training.train import resolved_config, setup

log = logging.getLogger("training.ensemble")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--member", type=Path, action="append", required=True, help="a store folder; repeat per member")
    p.add_argument("--data", type=Path, required=True, help="as for training.train: its val split scores the whole")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument(
        "--weight",
        type=float,
        action="append",
        help="a member's share of the average, in --member order (default: equal)",
    )
    p.add_argument(
        "--faces",
        action="append",
        default=[],
        metavar="I=KIND",
        help="member I scores only gray or only colour faces (KIND gray|colour; needs a colour ensemble input): one "
        "face runs only its own members",
    )
    p.add_argument(
        "--mirror",
        type=int,
        action="append",
        default=[],
        metavar="I",
        help="member I averages each face with its mirror image inside the graph; with --no-tta, the other members "
        "score the face alone (mirror TTA only where it pays)",
    )
    p.add_argument(
        "--gray-plane",
        action="store_true",
        help="members routed to gray faces (--faces I=gray) that read colour get one gray plane resampled and "
        "repeated, not three: a third of their input's resampling",
    )
    p.add_argument("--input-from", type=int, help="the member whose input the ensemble reads (default: the largest)")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-tta", action="store_true")
    return p


def read_members(folders: list[Path]) -> list[Manifest]:
    manifests = [read_manifest(f) for f in folders]
    first = manifests[0]
    for m in manifests:
        require_compatible_labels(m, first.labels, "member")
        if m.task != "face-classification" or m.logit_bias:
            raise SystemExit(f"{m.key}: only face-classification members without a logit bias can be joined")
        if (m.input.framing, m.input.face_margin) != (first.input.framing, first.input.face_margin):
            raise SystemExit(
                f"{m.key} reads a {m.input.framing} crop with margin {m.input.face_margin}, {first.key} a "
                f"{first.input.framing} crop with margin {first.input.face_margin}: members must read the same crop "
                "(publish one again with --framing/--face-margin)"
            )
    return manifests


def ensemble_input(manifests: list[Manifest], index: int | None) -> InputSpec:
    """The input the ensemble reads: ``index``'s, or the largest colour member's (gray where every member is gray;
    ties: the first), so no colour member is handed a gray face."""
    if index is None:
        index = max(range(len(manifests)), key=lambda i: (manifests[i].input.channels, _pixels(manifests[i].input)))
    if not 0 <= index < len(manifests):
        raise SystemExit(f"--input-from {index}: there are {len(manifests)} members")
    spec = manifests[index].input
    if any(m.input.channels > spec.channels for m in manifests):
        log.warning("the ensemble reads gray faces: its colour members get them as three equal channels")
    return spec


def _pixels(spec: InputSpec) -> int:
    return spec.height * spec.width * spec.channels


def shared_input(spec: InputSpec) -> dict:
    return spec.model_dump(include=set(SHARED_INPUT))


def parse_faces(items: list[str], n: int) -> dict[int, str]:
    """``["2=colour"]`` -> ``{2: "colour"}``; each index names a member, each kind is gray or colour."""
    out = {}
    for item in items:
        index, _, kind = item.partition("=")
        if not index.isdigit() or not 0 <= int(index) < n or kind not in FACES[1:]:
            raise SystemExit(f"--faces {item!r}: write I=gray or I=colour with I in 0..{n - 1}")
        out[int(index)] = kind
    return out


def member_args(manifests: list[Manifest], spec: InputSpec, weights: list[float] | None = None) -> list[dict]:
    """Each member as the ensemble's architecture records it; ``input`` only where it reads another than ``spec``."""
    if weights is not None and len(weights) != len(manifests):
        raise SystemExit(f"{len(weights)} --weight for {len(manifests)} members: give one per member or none")
    out = []
    for i, m in enumerate(manifests):
        member = {
            "architecture": m.architecture,
            "architecture_args": m.architecture_args,
            "temperature": m.calibration_temperature,
            "source": m.key,
        }
        if weights is not None:
            member["weight"] = weights[i]
        if shared_input(m.input) != shared_input(spec):
            member["input"] = shared_input(m.input)
        out.append(member)
    return out


def training_args(args: argparse.Namespace, manifests: list[Manifest], spec: InputSpec) -> argparse.Namespace:
    """The ``training.train`` arguments of a zero-epoch run of ``emotion_ensemble`` over these members, so that the
    run folder, its resolved config and its val report come out as for any trained model."""
    members = member_args(manifests, spec, args.weight)
    for i, kind in parse_faces(args.faces, len(members)).items():
        members[i]["faces"] = kind
    for i in args.mirror:
        if not 0 <= i < len(members):
            raise SystemExit(f"--mirror {i}: there are {len(members)} members")
        members[i]["mirror"] = True
    if args.gray_plane:
        planes = [m for m in members if m.get("faces") == "gray" and m.get("input", {}).get("channels") == 3]
        if not planes:
            raise SystemExit(
                "--gray-plane: no member routed to gray faces (--faces I=gray) reads colour at its own size"
            )
        for m in planes:
            m["gray_plane"] = True
    needs_input = any("faces" in m or "input" in m for m in members)
    arch_args = {"members": members} | ({"input": shared_input(spec)} if needs_input else {})
    argv = ["--data", str(args.data), "--output", str(args.output), "--arch", "emotion_ensemble", "--epochs", "0"]
    argv += ["--arch-args", json.dumps(arch_args), "--labels", ",".join(manifests[0].labels)]
    argv += ["--threads", str(args.threads)] if args.threads else []
    if args.no_tta:
        argv.append("--no-tta")
    return train_parser().parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    manifests = read_members(args.member)
    spec = ensemble_input(manifests, args.input_from)
    targs = training_args(args, manifests, spec)
    setup(targs)
    task = task_for(targs)
    task.cfg = dataclasses.replace(task.cfg, input=spec)  # the ensemble reads its chosen member's input and crop
    train, val = task.load()
    amp_dtype = resolve_amp(targs.amp, targs.device)
    cfg = resolved_config(targs, task, train, val, amp_dtype)
    (args.output / "config.json").write_text(json.dumps(cfg, indent=2))
    model = build_model(cfg)
    for net, folder, manifest in zip(model.members, args.member, manifests, strict=True):
        net.load_state_dict(entry_state(StoreEntry(manifest, folder)))  # a member may itself link weights
    torch.save({"model": model.state_dict()}, args.output / "best.pt")
    report = task.final_report(model, val, amp_dtype, {"best_epoch": 0, "epoch": 0, "history": []})
    log.info("ensemble of %d: val accuracy %.4f macro-F1 %.4f", len(manifests), report["accuracy"], report["macro_f1"])
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
