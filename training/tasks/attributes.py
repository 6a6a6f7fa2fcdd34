"""Whole-frame attributes (frame-attributes): a ``path,<attr>,...`` CSV, a sigmoid per attribute trained with
binary cross-entropy, and a threshold per attribute chosen on val (its best F1) for the manifest."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model_store import InputSpec, normalize, sigmoid
from training.attribute_reports import attribute_metrics, best_threshold, write_attribute_report
from training.augment import augment_batch
from training.data_attributes import AttributeArrays, attribute_splits, holdout, load_attributes
from training.engine import predict, run_epoch
from training.reports import plot_learning_curves
from training.tasks.base import TrainTask, split_labels, summary, train_and_val


def positive_weights(data: AttributeArrays, mode: str) -> torch.Tensor | None:
    """Per attribute ``negatives / positives`` (``balanced``), its square root (``sqrt``) or none: rare attributes
    weigh more in the loss."""
    if mode == "none":
        return None
    pos = torch.from_numpy(data.targets.sum(axis=0)).clamp(min=1)
    ratio = (len(data) - pos).clamp(min=1) / pos
    return ratio if mode == "balanced" else ratio.sqrt()


class AttributeTask(TrainTask):
    default_select = "mean_ap"
    metrics = ("mean_ap", "macro_f1", "accuracy")

    def load(self) -> tuple[AttributeArrays, AttributeArrays]:
        args, spec = self.args, self.cfg.input
        if args.input_size:
            spec = spec.model_copy(update={"height": args.input_size, "width": args.input_size})
        assert isinstance(spec, InputSpec)
        self.spec, labels = spec, split_labels(args.labels)

        def read(source, split, limit, names=labels):
            return load_attributes(source, split, spec, names, limit, args.seed)

        train, val = train_and_val(args, read, attribute_splits(args.data), holdout)
        self.labels = train.labels
        return train, val

    def epoch(self, model, train: AttributeArrays, opt, sched, gen, amp_dtype, scaler) -> dict:
        args, spec = self.args, self.spec
        pos_weight = positive_weights(train, args.class_weights)
        pos_weight = pos_weight.to(args.device) if pos_weight is not None else None

        def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            aug = augment_batch(torch.from_numpy(train.images[idx]), args.augment, gen).numpy()
            return torch.from_numpy(normalize(aug, spec)), torch.from_numpy(train.targets[idx])

        def loss_fn(out, y: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
            logits = out.float()
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
            return loss, ((logits > 0) == (y > 0.5)).float().mean(dim=1).sum().item()

        return run_epoch(model, len(train), batch, loss_fn, opt, sched, args, gen, amp_dtype, scaler)

    def evaluate(self, model, data: AttributeArrays, amp_dtype, thresholds: list[float] | None = None) -> dict:
        logits, _ = predict(model, data.images, self.spec, self.args.device, tta=False, amp_dtype=amp_dtype)
        thresholds = thresholds or [0.5] * len(data.labels)
        return {**attribute_metrics(sigmoid(logits), data.targets, data.labels, thresholds), "_logits": logits}

    def final_report(self, model, val: AttributeArrays, amp_dtype, state: dict) -> dict:
        """The best epoch on val: a threshold per attribute (its best F1), the metrics at those thresholds."""
        self.load_best(model)
        probs = sigmoid(self.evaluate(model, val, amp_dtype)["_logits"])
        thresholds = [best_threshold(probs[:, i], val.targets[:, i]) for i in range(len(val.labels))]
        metrics = attribute_metrics(probs, val.targets, val.labels, thresholds)
        metrics.update(thresholds=dict(zip(val.labels, thresholds, strict=True)), **summary(state, False))
        write_attribute_report(self.args.output, "val", metrics)
        plot_learning_curves(state["history"], self.args.output / "learning_curves.png")
        return metrics

    def dataset(self, train: AttributeArrays, val: AttributeArrays) -> dict:
        return {
            "train_positives": dict(zip(train.labels, train.positives(), strict=True)),
            "val_positives": dict(zip(val.labels, val.positives(), strict=True)),
        }
