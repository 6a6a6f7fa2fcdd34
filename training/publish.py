"""Publish an exported run into the store: ``python -m training.publish --run runs/x --name N --version V``.

Writes ``<store>/<name>/<version>/`` with the slim weights, the ONNX file and a manifest holding the labels, input
spec (for feature models the per-feature mean and std computed on the training rows), the per-attribute thresholds
chosen on val (attribute models), file checksums, dataset sizes, val metrics and the training config. An ensemble
member that is an entry of the same store is linked, not copied (``training.link_members``; ``--no-link`` keeps the
entry self-contained).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from model_store import DEFAULT_ROOT, TASKS, Manifest, StoreEntry, publish, read_manifest
from model_store.manifest import Gate
from training.evaluate import tta_margin
from training.link_members import link
from training.runs import ONNX_NAME, SLIM_NAME, TORCH_PROGRAM_NAME, load_config

log = logging.getLogger("training.publish")
SUMMARY_KEYS = (
    "samples",
    "accuracy",
    "macro_f1",
    "nll",
    "ece",
    "ece_uncalibrated",
    "temperature",
    "best_epoch",
    "epochs_run",
    "tta",
    "train_seconds",
    "per_class",
    "valence_arousal",
    "mean_ap",
    "per_attribute",
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--description", default="")
    p.add_argument(
        "--valence-arousal",
        choices=["derived", "predicted", "none"],
        help="default: predicted when the model has a valence/arousal head, else derived",
    )
    p.add_argument("--face-margin", type=float, help="override the crop margin recorded at training time")
    p.add_argument(
        "--framing",
        choices=["box", "chip"],
        help="override the crop the service cuts: the detector's box, or the 5-point-aligned chip (measure each "
        "with benchmarks.compare_models --variant)",
    )
    p.add_argument(
        "--edge",
        choices=["clip", "replicate"],
        help="how a box crop meets the image's edge: cut off, or kept square with the border repeated (measure "
        "with benchmarks.stability)",
    )
    p.add_argument(
        "--tta-margin",
        type=tta_margin,
        default=1.0,
        help="mirror only faces whose calibrated top-two margin is under this (manifest mirror_tta_margin; 1: every "
        "face); choose with training.evaluate --tta-margin on both val sets and benchmarks.eval_photos",
    )
    p.add_argument(
        "--gate-output",
        help="an ensemble's gate: the graph tensor holding the member's calibrated probabilities (manifest gate)",
    )
    p.add_argument(
        "--gate-margin",
        type=float,
        help="with --gate-output: the member's top-two margin from which it answers alone; choose with "
        "benchmarks.gate (labels as the whole ensemble's on both val sets)",
    )
    p.add_argument(
        "--logit-bias",
        type=Path,
        help="JSON {label: bias} added to the logits when serving (benchmarks/eval_photos.py --fit-bias writes one)",
    )
    p.add_argument(
        "--no-link",
        action="store_true",
        help="copy ensemble members that are entries of the store instead of linking their weights file",
    )
    p.add_argument("--overwrite", action="store_true")
    return p


def gate(args: argparse.Namespace) -> Gate | None:
    if (args.gate_output is None) != (args.gate_margin is None):
        raise SystemExit("--gate-output and --gate-margin go together")
    return None if args.gate_output is None else Gate(output=args.gate_output, margin=args.gate_margin)


def build_manifest(args: argparse.Namespace, cfg: dict) -> Manifest:
    report_path = args.run / "val.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    affect = TASKS[cfg["task"]].affect
    default_va = "derived" if affect else "none"
    va_mode = args.valence_arousal or ("predicted" if "valence_arousal" in cfg["outputs"] else default_va)
    training = {k: v for k, v in cfg["args"].items() if k not in {"data", "val_data", "output", "resume"}}
    crop = {"face_margin": args.face_margin, "framing": args.framing, "edge": args.edge}
    overrides = {k: v for k, v in crop.items() if v is not None}
    return Manifest(
        name=args.name,
        version=args.version,
        task=cfg["task"],
        architecture=cfg["architecture"],
        architecture_args=cfg["architecture_args"],
        labels=cfg["labels"],
        input={**cfg["input"], **overrides},
        outputs=cfg["outputs"],
        valence_arousal=va_mode,
        calibration_temperature=report.get("temperature", 1.0),
        mirror_tta=not cfg["args"].get("no_tta", False),  # served as it was evaluated and calibrated
        mirror_tta_margin=args.tta_margin,
        gate=gate(args),
        logit_bias=json.loads(args.logit_bias.read_text()) if args.logit_bias else {},
        thresholds=report.get("thresholds", {}),
        metrics={"val": {k: report[k] for k in SUMMARY_KEYS if k in report}},
        dataset=cfg["dataset"],
        training={**training, "augment": cfg.get("augment"), "amp": cfg.get("amp"), "torch": cfg.get("torch")},
        description=args.description,
    )


def main(args: argparse.Namespace):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = load_config(args.run)
    export_dir = args.run / "export"
    artifacts = {"weights": export_dir / SLIM_NAME, "onnx": export_dir / ONNX_NAME}
    missing = [str(p) for p in artifacts.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: run training.export_slim and training.export_onnx first")
    if (export_dir / TORCH_PROGRAM_NAME).is_file():
        artifacts["torch_program"] = export_dir / TORCH_PROGRAM_NAME
    entry = publish(build_manifest(args, cfg), artifacts, args.store, overwrite=args.overwrite)
    if not getattr(args, "no_link", False) and link(entry.folder):
        entry = StoreEntry(read_manifest(entry.folder), entry.folder)
    log.info("published %s -> %s", entry.manifest.key, entry.folder)
    return entry


if __name__ == "__main__":
    main(get_args_parser().parse_args())
