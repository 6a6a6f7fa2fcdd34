"""Train a registered architecture on a face dataset: ``python -m training.train --data ... --output runs/x``.

Writes into ``--output``: ``config.json`` (the resolved config), ``checkpoint.pt`` every epoch (``--resume``
continues from it), ``best.pt`` (weights of the best epoch on val), ``metrics.json`` (per-epoch history), and at
the end the val report (``val.json``, ``val_per_class.json``, ``val_confusion.png``) and ``learning_curves.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from model_store import InputSpec, resolve_device
from training.augment import AugmentCfg
from training.data import FaceArrays, available_splits, load_faces
from training.engine import (
    class_weights,
    make_optimizer,
    make_scheduler,
    predict,
    resolve_amp,
    train_one_epoch,
)
from training.models import create_model, get_model_cfg, list_models
from training.reports import (
    classification_metrics,
    fit_temperature,
    plot_learning_curves,
    regression_metrics,
    write_report,
)
from training.runs import load_weights

log = logging.getLogger("training.train")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="ImageFolder root, FER2013 CSV or path,label,split CSV")
    p.add_argument("--val-data", type=Path, help="separate validation source (default: the 'val' split of --data)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share when --data has no val split")
    p.add_argument("--labels", default="angry,disgust,fear,happy,sad,surprise,neutral", help="output order")
    p.add_argument("--arch", default="emotion_cnn", help=f"one of: {', '.join(list_models())}")
    p.add_argument(
        "--arch-args", type=json.loads, default={}, help="JSON kwargs for the architecture, e.g. '{\"width\": 16}'"
    )
    p.add_argument("--input-size", type=int, help="override the architecture's default square input size")
    p.add_argument("--face-margin", type=float, help="override the crop margin recorded for serving")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--opt", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--sched", choices=["cosine", "onecycle"], default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--class-weights", choices=["none", "sqrt", "balanced"], default="sqrt")
    p.add_argument(
        "--va-weight", type=float, default=0.5, help="weight of the valence/arousal MSE in multi-task models"
    )
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--rotate-deg", type=float, default=15.0)
    p.add_argument("--erase-prob", type=float, default=0.5)
    p.add_argument("--zoom-out", type=float, default=0.0, help="extra zoom-out: faces shrink to 0.9 - this")
    p.add_argument("--lowres-prob", type=float, default=0.0, help="share of images shown at a lower resolution")
    p.add_argument("--lowres-min", type=int, default=16, help="smallest side for --lowres-prob")
    p.add_argument(
        "--finetune", type=Path, help="start from these weights (slim safetensors or best.pt) with a fresh schedule"
    )
    p.add_argument(
        "--patience", type=int, default=15, help="early stop after this many epochs without a better val score"
    )
    p.add_argument("--select-metric", choices=["accuracy", "macro_f1"], default="accuracy")
    p.add_argument("--no-tta", action="store_true", help="evaluate without horizontal-flip test-time augmentation")
    p.add_argument("--limit", type=int, help="use at most this many training samples (smoke runs)")
    p.add_argument("--val-limit", type=int)
    p.add_argument(
        "--time-limit", type=float, help="minutes; stop cleanly after the epoch that crosses it (resume later)"
    )
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue from --output/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    return p


def build_spec(args: argparse.Namespace) -> InputSpec:
    spec = get_model_cfg(args.arch).input
    update = {}
    if args.input_size:
        update.update(height=args.input_size, width=args.input_size)
    if args.face_margin is not None:
        update["face_margin"] = args.face_margin
    return spec.model_copy(update=update)


def holdout(data: FaceArrays, fraction: float, seed: int) -> tuple[FaceArrays, FaceArrays]:
    """Stratified split of one pool into train and val."""
    rng = np.random.default_rng(seed)
    val_idx = np.concatenate(
        [
            rng.permutation(np.flatnonzero(data.targets == c))[: max(1, round(fraction * (data.targets == c).sum()))]
            for c in np.unique(data.targets)
        ]
    )
    mask = np.zeros(len(data), bool)
    mask[val_idx] = True

    def take(m: np.ndarray) -> FaceArrays:
        return FaceArrays(data.images[m], data.targets[m], data.labels, data.valence_arousal[m])

    return take(~mask), take(mask)


def load_splits(args: argparse.Namespace, spec: InputSpec, labels: list[str]) -> tuple[FaceArrays, FaceArrays]:
    if args.val_data:
        train = load_faces(
            args.data, "train" if "train" in available_splits(args.data) else None, spec, labels, args.limit, args.seed
        )
        return train, load_faces(args.val_data, None, spec, labels, args.val_limit, args.seed)
    splits = available_splits(args.data)
    if "val" in splits:
        train = load_faces(args.data, "train" if "train" in splits else None, spec, labels, args.limit, args.seed)
        return train, load_faces(args.data, "val", spec, labels, args.val_limit, args.seed)
    return holdout(load_faces(args.data, None, spec, labels, args.limit, args.seed), args.val_fraction, args.seed)


def evaluate_split(model, data: FaceArrays, spec: InputSpec, args, amp_dtype, temperature: float = 1.0) -> dict:
    logits, va = predict(model, data.images, spec, args.device, tta=not args.no_tta, amp_dtype=amp_dtype)
    metrics = classification_metrics(logits, data.targets, data.labels, temperature)
    if va is not None:
        metrics["valence_arousal"] = regression_metrics(va, data.valence_arousal)
    metrics["_logits"] = logits
    return metrics


def resolved_config(args, spec: InputSpec, train: FaceArrays, val: FaceArrays, amp_dtype) -> dict:
    cfg = get_model_cfg(args.arch)
    plain = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in {"augment", "epoch_display"}
    }
    return {
        "args": plain,
        "architecture": args.arch,
        "architecture_args": args.arch_args,
        "task": cfg.task,
        "outputs": list(cfg.outputs),
        "labels": train.labels,
        "input": spec.model_dump(),
        "augment": dataclasses.asdict(args.augment),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "torch": torch.__version__,
        "dataset": {
            "source": str(args.data),
            "val_source": str(args.val_data or args.data),
            "train_samples": len(train),
            "val_samples": len(val),
            "train_class_counts": dict(zip(train.labels, train.class_counts(), strict=True)),
            "val_class_counts": dict(zip(val.labels, val.class_counts(), strict=True)),
        },
    }


def save_checkpoint(path: Path, model, opt, sched, epoch: int, state: dict, gen: torch.Generator) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "state": state,
            "rng": gen.get_state(),
        },
        tmp,
    )
    tmp.replace(path)


def epoch_record(epoch: int, train_stats: dict, val_metrics: dict, lr: float, seconds: float) -> dict:
    return {
        "epoch": epoch,
        **train_stats,
        "val_accuracy": val_metrics["accuracy"],
        "val_macro_f1": val_metrics["macro_f1"],
        "val_nll": val_metrics["nll"],
        "lr": lr,
        "seconds": round(seconds, 1),
    }


def fit(args, model, spec, train, val, amp_dtype, opt, sched, gen, state: dict) -> dict:
    """The epoch loop: train, evaluate on val, checkpoint, keep the best, stop early or at the time limit."""
    weights = class_weights(train.class_counts(), args.class_weights)
    weights = weights.to(args.device) if weights is not None else None
    started = time.time()
    scaler = torch.amp.GradScaler(args.device) if amp_dtype == torch.float16 else None
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        t0 = time.time()
        args.epoch_display = f"{epoch}/{args.epochs}"
        stats = train_one_epoch(model, train, spec, opt, sched, args, gen, weights, amp_dtype, scaler)
        val_metrics = evaluate_split(model, val, spec, args, amp_dtype)
        state["history"].append(epoch_record(epoch, stats, val_metrics, opt.param_groups[0]["lr"], time.time() - t0))
        state["epoch"] = epoch
        score = val_metrics[args.select_metric]
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch)
            torch.save({"model": model.state_dict(), "epoch": epoch}, args.output / "best.pt")
        save_checkpoint(args.output / "checkpoint.pt", model, opt, sched, epoch, state, gen)
        (args.output / "metrics.json").write_text(
            json.dumps({"history": state["history"], "best_epoch": state["best_epoch"]}, indent=2)
        )
        log.info(
            "epoch %d: loss %.3f val acc %.4f macro-F1 %.4f (best %.4f @%d) %.0fs",
            epoch,
            stats["train_loss"],
            val_metrics["accuracy"],
            val_metrics["macro_f1"],
            state["best_score"],
            state["best_epoch"],
            time.time() - t0,
        )
        if epoch - state["best_epoch"] >= args.patience:
            log.info("early stop: no better val %s for %d epochs", args.select_metric, args.patience)
            state["stopped_early"] = True
            break
        if args.time_limit is not None and (time.time() - started) / 60 >= args.time_limit:
            log.info("time limit reached after epoch %d; continue with --resume", epoch)
            break
    return state


def final_report(args, model, spec, val, amp_dtype, state: dict) -> dict:
    """Evaluate the best epoch, fit a calibration temperature on val, write the reports."""
    model.load_state_dict(torch.load(args.output / "best.pt", map_location=args.device, weights_only=True)["model"])
    raw = evaluate_split(model, val, spec, args, amp_dtype)
    logits = raw.pop("_logits")
    temperature = fit_temperature(logits, val.targets)
    calibrated = classification_metrics(logits, val.targets, val.labels, temperature)
    calibrated.update({k: v for k, v in raw.items() if k == "valence_arousal"})
    calibrated.update(
        temperature=temperature,
        ece_uncalibrated=raw["ece"],
        nll_uncalibrated=raw["nll"],
        best_epoch=state["best_epoch"],
        epochs_run=state["epoch"],
        tta=not args.no_tta,
        train_seconds=round(sum(h["seconds"] for h in state["history"]), 1),
    )
    write_report(args.output, "val", calibrated, val.labels)
    plot_learning_curves(state["history"], args.output / "learning_curves.png")
    return calibrated


def setup(args: argparse.Namespace) -> None:
    """Logging, threads, seed, device, augmentation and the output folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.device = resolve_device(args.device)
    off = {"hflip": 0, "rotate_deg": 0, "shift": 0, "scale": 0, "brightness": 0, "contrast": 0, "erase_prob": 0}
    on = {
        "rotate_deg": args.rotate_deg,
        "erase_prob": args.erase_prob,
        "zoom_out": args.zoom_out,
        "lowres_prob": args.lowres_prob,
        "lowres_min": args.lowres_min,
    }
    args.augment = AugmentCfg(**(off if args.no_augment else on))
    args.output.mkdir(parents=True, exist_ok=True)


def resume(args: argparse.Namespace, model, opt, sched, gen: torch.Generator) -> dict:
    """The loop state: fresh, or restored with model, optimiser, schedule and RNG from ``checkpoint.pt``."""
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "stopped_early": False}
    if args.finetune and not (args.resume and (args.output / "checkpoint.pt").exists()):
        load_weights(model, args.finetune)  # train_one_epoch switches it back to train mode
        log.info("fine-tuning from %s", args.finetune)
    if args.resume and (args.output / "checkpoint.pt").exists():
        ckpt = torch.load(args.output / "checkpoint.pt", map_location=args.device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["rng"])
        state = ckpt["state"]
        log.info("resumed from epoch %d", state["epoch"])
    return state


def main(args: argparse.Namespace) -> dict:
    setup(args)
    spec, labels = build_spec(args), [s.strip() for s in args.labels.split(",")]
    train, val = load_splits(args, spec, labels)
    amp_dtype = resolve_amp(args.amp, args.device)
    (args.output / "config.json").write_text(json.dumps(resolved_config(args, spec, train, val, amp_dtype), indent=2))
    model = create_model(args.arch, len(labels), in_chans=spec.channels, **args.arch_args)
    model = model.to(args.device, memory_format=torch.contiguous_format if spec.frames else torch.channels_last)
    steps_per_epoch = max(1, len(train) // args.batch_size)
    opt = make_optimizer(model, args.opt, args.lr, args.weight_decay)
    sched = make_scheduler(opt, args.sched, args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(args.seed)
    state = resume(args, model, opt, sched, gen)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "%s: %d train / %d val, %d parameters, %s, amp %s",
        args.arch,
        len(train),
        len(val),
        n_params,
        args.device,
        amp_dtype,
    )
    state = fit(args, model, spec, train, val, amp_dtype, opt, sched, gen, state)
    if state["epoch"] < args.epochs and not state.get("stopped_early"):
        return {"finished": False, "epoch": state["epoch"]}
    report = final_report(args, model, spec, val, amp_dtype, state)
    log.info(
        "best epoch %d: val accuracy %.4f macro-F1 %.4f (T=%.2f)",
        report["best_epoch"],
        report["accuracy"],
        report["macro_f1"],
        report["temperature"],
    )
    return {"finished": True, **report}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
