"""What the training loop needs from a task: its data, one epoch, an evaluation and the final report.

``training.train`` runs one loop (optimiser, schedule, checkpoints, early stopping, resume) for every task; a task
supplies how its rows are read, batched and scored. Softmax tasks share the calibrated classification report here.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from torch import nn

from model_store import FeatureSpec, InputSpec
from training.engine import class_weights
from training.models import create_model, get_model_cfg, input_kwargs
from training.reports import classification_metrics, fit_temperature, plot_learning_curves, write_report


def split_labels(value: str | None) -> list[str] | None:
    """``--labels a,b,c`` -> the list (None: the task's default, usually the labels found in the data)."""
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def device_class_weights(counts: list[int], args: argparse.Namespace) -> torch.Tensor | None:
    """``--class-weights`` for these class counts, on the training device (None: unweighted)."""
    weights = class_weights(counts, args.class_weights)
    return weights.to(args.device) if weights is not None else None


def train_and_val(args: argparse.Namespace, read, splits: set[str], split_off) -> tuple[Any, Any]:
    """Train and val sets: ``--val-data`` if given, else the source's own ``val`` split, else ``split_off`` (a
    held-out share of the data). ``read(source, split, limit, labels)``; val is read with train's labels."""
    train_split = "train" if "train" in splits else None
    if args.val_data:
        train = read(args.data, train_split, args.limit)
        return train, read(args.val_data, None, args.val_limit, train.labels)
    if "val" in splits:
        train = read(args.data, train_split, args.limit)
        return train, read(args.data, "val", args.val_limit, train.labels)
    return split_off(read(args.data, None, args.limit), args.val_fraction, args.seed)


class TrainTask:
    """Base: the architecture's registered config, and the calibrated softmax report shared by face and feature
    models. Subclasses set ``spec`` and ``labels`` in ``load``."""

    default_select = "accuracy"
    metrics = ("accuracy", "macro_f1")  # what --select-metric may choose
    tta = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cfg = get_model_cfg(args.arch)
        self.spec: InputSpec | FeatureSpec = self.cfg.input
        self.labels: list[str] = []

    def load(self) -> tuple[Any, Any]:
        """``(train, val)`` data; sets ``spec`` and ``labels``."""
        raise NotImplementedError

    def epoch(self, model: nn.Module, train, opt, sched, gen, amp_dtype, scaler) -> dict:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data, amp_dtype) -> dict:
        """Metrics with ``accuracy``, ``macro_f1`` and ``nll`` (and ``_logits``, the raw outputs)."""
        raise NotImplementedError

    def dataset(self, train, val) -> dict:
        raise NotImplementedError

    def select_metric(self) -> str:
        metric = self.args.select_metric or self.default_select
        if metric not in self.metrics:
            choices = " or ".join(self.metrics)
            raise SystemExit(f"--select-metric {metric} does not apply to {self.cfg.task}; use {choices}")
        return metric

    def make_model(self) -> nn.Module:
        args = self.args
        pretrained = {"pretrained": True} if args.pretrained else {}
        return create_model(args.arch, len(self.labels), **input_kwargs(self.spec), **pretrained, **args.arch_args)

    def load_best(self, model: nn.Module) -> None:
        best = torch.load(self.args.output / "best.pt", map_location=self.args.device, weights_only=True)
        model.load_state_dict(best["model"])

    def final_report(self, model: nn.Module, val, amp_dtype, state: dict) -> dict:
        """Evaluate the best epoch, fit a calibration temperature on val, write the reports."""
        args = self.args
        self.load_best(model)
        raw = self.evaluate(model, val, amp_dtype)
        logits = raw.pop("_logits")
        temperature = fit_temperature(logits, val.targets)
        calibrated = classification_metrics(logits, val.targets, val.labels, temperature)
        calibrated.update({k: v for k, v in raw.items() if k == "valence_arousal"})
        calibrated.update(
            temperature=temperature,
            ece_uncalibrated=raw["ece"],
            nll_uncalibrated=raw["nll"],
            **summary(state, self.tta),
        )
        write_report(args.output, "val", calibrated, val.labels)
        plot_learning_curves(state["history"], args.output / "learning_curves.png")
        return calibrated


def summary(state: dict, tta: bool) -> dict:
    return {
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "tta": tta,
        "train_seconds": round(sum(h["seconds"] for h in state["history"]), 1),
    }


def class_counts_dict(labels: list[str], counts: list[int] | np.ndarray) -> dict[str, int]:
    return {label: int(c) for label, c in zip(labels, counts, strict=True)}
