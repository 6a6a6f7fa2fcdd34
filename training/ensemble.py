"""Join published face classifiers into one ensemble run: ``python -m training.ensemble --member DIR ... --output R``.

The members (store folders, e.g. ``model_store/fer_emotion_cnn/1.3.0``) must share labels and input. The result is
a run folder like ``training.train`` writes (``config.json``, ``best.pt``, ``val.json`` with a temperature fitted on
val for the whole), so ``export_slim``, ``export_onnx`` and ``publish`` ship it as one graph: the service runs it
like any other model, with one preprocessing and one forward pass per batch.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from model_store import Manifest, read_manifest
from training.engine import resolve_amp
from training.runs import SLIM_NAME, build_model, load_weights, require_compatible
from training.tasks import task_for
from training.train import get_args_parser as train_parser
from training.train import resolved_config, setup

log = logging.getLogger("training.ensemble")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--member", type=Path, action="append", required=True, help="a store folder; repeat per member")
    p.add_argument("--data", type=Path, required=True, help="as for training.train: its val split scores the whole")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-tta", action="store_true")
    return p


def read_members(folders: list[Path]) -> list[Manifest]:
    manifests = [read_manifest(f) for f in folders]
    first = manifests[0]
    for m in manifests:
        require_compatible(m, first.labels, first.input, "member")
        if m.task != "face-classification" or m.logit_bias:
            raise SystemExit(f"{m.key}: only face-classification members without a logit bias can be joined")
    return manifests


def member_args(manifests: list[Manifest]) -> list[dict]:
    return [
        {
            "architecture": m.architecture,
            "architecture_args": m.architecture_args,
            "temperature": m.calibration_temperature,
            "source": m.key,
        }
        for m in manifests
    ]


def training_args(args: argparse.Namespace, manifests: list[Manifest]) -> argparse.Namespace:
    """The ``training.train`` arguments of a zero-epoch run of ``emotion_ensemble`` over these members, so that the
    run folder, its resolved config and its val report come out as for any trained model."""
    argv = ["--data", str(args.data), "--output", str(args.output), "--arch", "emotion_ensemble", "--epochs", "0"]
    argv += ["--arch-args", json.dumps({"members": member_args(manifests)}), "--labels", ",".join(manifests[0].labels)]
    argv += ["--threads", str(args.threads)] if args.threads else []
    if args.no_tta:
        argv.append("--no-tta")
    return train_parser().parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    manifests = read_members(args.member)
    targs = training_args(args, manifests)
    setup(targs)
    task = task_for(targs)
    train, val = task.load()
    amp_dtype = resolve_amp(targs.amp, targs.device)
    cfg = resolved_config(targs, task, train, val, amp_dtype)
    cfg["input"] = {**cfg["input"], "face_margin": manifests[0].input.face_margin}
    (args.output / "config.json").write_text(json.dumps(cfg, indent=2))
    model = build_model(cfg)
    for net, folder in zip(model.members, args.member, strict=True):
        load_weights(net, folder / SLIM_NAME)
    torch.save({"model": model.state_dict()}, args.output / "best.pt")
    report = task.final_report(model, val, amp_dtype, {"best_epoch": 0, "epoch": 0, "history": []})
    log.info("ensemble of %d: val accuracy %.4f macro-F1 %.4f", len(manifests), report["accuracy"], report["macro_f1"])
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
