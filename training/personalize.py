"""Per-person fine-tuning of a feature model: ``python -m training.personalize --model model_store/N/V
--data person.csv --subject ID``.

Reads the rows of subject ``ID`` from ``--data`` (a feature CSV with a ``subject`` column), holds out a stratified
share of them, freezes the model's early layers (``--freeze``: its first weighted layers; BatchNorm layers keep
adapting their statistics to the person, as in AdaBN), fine-tunes the rest on the other rows, and reports accuracy
on the held-out rows before and after, both measured through ``model_store.Predictor`` on the published files (what
the service serves). Publishes ``N`` version ``V+ID`` (a PEP 440 local version: requests select it with
``version=V+ID``; requests naming no version keep getting ``V``), with the report in its manifest and in
``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch

from model_store import (
    FeatureSpec,
    Predictor,
    StoreEntry,
    is_valid_version,
    public_version,
    publish,
    read_manifest,
)
from training.artifacts import load_entry_model, write_artifacts
from training.data import DatasetError
from training.data_features import FeatureArrays, load_features, stratified_split
from training.reports import classification_metrics, write_report
from training.tasks.features import feature_epoch

log = logging.getLogger("training.personalize")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="store folder <store>/<name>/<version>")
    p.add_argument("--data", type=Path, required=True, help="feature CSV with label, subject and feature columns")
    p.add_argument("--subject", required=True, help="whose rows to fine-tune on; becomes the local version part")
    p.add_argument("--store", type=Path, help="where to publish (default: the store the model lives in)")
    p.add_argument("--holdout", type=float, default=0.5, help="share of the person's rows held out to measure")
    p.add_argument("--freeze", type=int, help="leading weighted layers kept frozen (default: half, at least one)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--output", type=Path, help="report folder (default: runs/personalize/<name>-<version>)")
    p.add_argument("--no-torch-program", action="store_true", help="skip model.pt2 (the torch backend's file)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier fine-tune of this person")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    return p


def local_version(base: str, subject: str) -> str:
    """``1.0.0+p07`` from version ``1.0.0`` (or ``1.0.0+x``) and subject ``P07`` (PEP 440: lowercase, '-'/'_'
    become '.'); SystemExit when the subject cannot be part of a version."""
    tag = re.sub(r"[-_]", ".", subject.strip().lower())
    version = f"{public_version(base)}+{tag}"
    if not tag or not is_valid_version(version):
        raise SystemExit(f"subject {subject!r} cannot be a local version: use letters, digits and '.' (max 16)")
    return version


def weighted_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules with weights of their own (linear, conv, recurrent), in order; normalisation layers excluded."""
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    return [m for m in model.modules() if not isinstance(m, norms) and any(True for _ in m.parameters(recurse=False))]


def freeze_early(model: torch.nn.Module, count: int | None) -> tuple[int, int]:
    """Freeze the first ``count`` weighted layers (default: half, at least one, never all); ``(frozen, total)``."""
    layers = weighted_layers(model)
    count = max(1, len(layers) // 2) if count is None else count
    if not 0 <= count < len(layers):
        raise SystemExit(
            f"--freeze {count}: the model has {len(layers)} weighted layers; freeze 0 to {len(layers) - 1}"
        )
    for layer in layers[:count]:
        for param in layer.parameters():
            param.requires_grad_(False)
    return count, len(layers)


def person_rows(args, entry: StoreEntry) -> tuple[FeatureArrays, FeatureArrays]:
    """The subject's rows split into (fine-tune, held out), after checking they fit the model."""
    spec = entry.manifest.input
    try:
        person = load_features(args.data, None, entry.manifest.labels, [args.subject])
    except DatasetError as exc:
        raise SystemExit(str(exc)) from None
    if person.x.shape[1] != spec.length:
        raise SystemExit(
            f"{args.data} has {person.x.shape[1]} feature columns; {entry.manifest.key} takes {spec.length}"
        )
    if spec.names and person.columns != spec.names:
        log.warning(
            "%s: feature columns differ from the names the model was trained on; order is what counts", args.data
        )
    tune, held = stratified_split(person, args.holdout, args.seed)
    if len(tune) < 2 or not len(held):
        raise SystemExit(f"subject {args.subject!r} has {len(person)} usable rows in {args.data}: too few to fine-tune")
    return tune, held


def fine_tune(model: torch.nn.Module, tune: FeatureArrays, spec: FeatureSpec, args) -> list[dict]:
    """AdamW on the unfrozen parameters, constant learning rate; the per-epoch loss history."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen = torch.Generator().manual_seed(args.seed)
    run = argparse.Namespace(
        device="cpu", batch_size=min(args.batch_size, len(tune)), label_smoothing=args.label_smoothing
    )
    history = []
    for epoch in range(1, args.epochs + 1):
        run.epoch_display = f"{epoch}/{args.epochs}"
        history.append({"epoch": epoch, **feature_epoch(model, tune, spec, opt, sched, run, gen, None, None, None)})
    return history


def measure(entry: StoreEntry, held: FeatureArrays) -> dict:
    """Metrics of a store entry on the held-out rows, through the Predictor (ONNX, what the service runs)."""
    predictor = Predictor.load(entry)
    logits = predictor.predict_features(held.x).logits
    return classification_metrics(logits, held.targets, held.labels, entry.manifest.calibration_temperature)


def personalised_manifest(entry: StoreEntry, args, version: str, report: dict):
    m = entry.manifest
    return m.model_copy(
        update={
            "version": version,
            "files": [],
            "metrics": {**m.metrics, "personalization": report},
            "training": {
                "personalized_from": m.key,
                "subject": args.subject,
                **{k: report[k] for k in ("frozen_layers", "epochs")},
            },
            "dataset": {"source": str(args.data), "subject": args.subject, **report["rows"]},
            "description": f"{m.key} fine-tuned for subject {args.subject} ({report['rows']['fine_tune']} rows)",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def export_and_publish(model, entry: StoreEntry, args, version: str, report: dict, held: FeatureArrays):
    """Export the fine-tuned model, measure it on the held-out rows through the Predictor on the exported files
    (staged in a temporary store), then publish it with the full report; ``(new entry, metrics after)``."""
    m = entry.manifest
    with tempfile.TemporaryDirectory() as tmp:
        meta = {"architecture": m.architecture, "labels": ",".join(m.labels)}
        export = Path(tmp) / "export"
        artifacts, diff = write_artifacts(model, m.input, m.outputs, export, meta, not args.no_torch_program)
        staged = publish(personalised_manifest(entry, args, version, report), artifacts, Path(tmp) / "stage")
        after = measure(staged, held)
        report.update(accuracy_after=after["accuracy"], macro_f1_after=after["macro_f1"], onnx_parity_max_abs_diff=diff)
        store = args.store or entry.folder.parent.parent
        return publish(personalised_manifest(entry, args, version, report), artifacts, store, args.overwrite), after


def load_base(args) -> StoreEntry:
    folder = args.model.resolve()
    entry = StoreEntry(read_manifest(folder), folder)
    if not isinstance(entry.manifest.input, FeatureSpec):
        raise SystemExit(
            f"{entry.manifest.key} is a {entry.manifest.task} model; personalisation fine-tunes feature models"
        )
    return entry


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    entry = load_base(args)
    version = local_version(entry.manifest.version, args.subject)
    tune, held = person_rows(args, entry)
    before = measure(entry, held)
    model = load_entry_model(entry)
    frozen, total = freeze_early(model, args.freeze)
    history = fine_tune(model, tune, entry.manifest.input, args)
    report = {
        "subject": args.subject,
        "base": entry.manifest.key,
        "rows": {"fine_tune": len(tune), "held_out": len(held)},
        "frozen_layers": f"{frozen} of {total}",
        "epochs": args.epochs,
        "accuracy_before": before["accuracy"],
        "macro_f1_before": before["macro_f1"],
    }
    new, after = export_and_publish(model, entry, args, version, report, held)
    write_outputs(args, new, report, before, after, history)
    print(
        f"{new.manifest.key}: accuracy on {len(held)} held-out rows of subject {args.subject} "
        f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} (macro-F1 {before['macro_f1']:.3f} -> "
        f"{after['macro_f1']:.3f}); published into {new.folder}"
    )
    return {**report, "version": version}


def write_outputs(args, new: StoreEntry, report: dict, before: dict, after: dict, history: list[dict]) -> None:
    """``before.json``, ``after.json`` (with per-class tables and confusion plots) and ``personalize.json``."""
    out = args.output or Path("runs/personalize") / f"{new.manifest.name}-{new.manifest.version}"
    write_report(out, "before", before, new.manifest.labels)
    write_report(out, "after", after, new.manifest.labels)
    (out / "personalize.json").write_text(json.dumps({**report, "history": history}, indent=2))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
