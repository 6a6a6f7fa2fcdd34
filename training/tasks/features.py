"""Feature vectors (feature-classification): a CSV of ``label[,subject][,split]`` plus numeric columns. The
per-feature standardisation is computed on the training rows and becomes the manifest's input spec, so the
service applies exactly what training applied (``model_store.standardize``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model_store import FeatureSpec, standardize
from training.data_features import (
    FeatureArrays,
    feature_splits,
    load_features,
    standardization,
    stratified_split,
)
from training.engine import predict_rows, run_epoch
from training.reports import classification_metrics
from training.tasks.base import TrainTask, class_counts_dict, device_class_weights, split_labels, train_and_val


def feature_epoch(model, data: FeatureArrays, spec: FeatureSpec, opt, sched, args, gen, weights, amp_dtype, scaler):
    """One pass of cross-entropy over standardised rows (used by training and by per-person fine-tuning)."""

    def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(standardize(data.x[idx], spec)), torch.from_numpy(data.targets[idx])

    def loss_fn(out, y: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        logits = out.float()
        loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=args.label_smoothing)
        return loss, (logits.argmax(1) == y).sum().item()

    return run_epoch(model, len(data), batch, loss_fn, opt, sched, args, gen, amp_dtype, scaler)


def feature_logits(model, data: FeatureArrays, spec: FeatureSpec, device: str, amp_dtype=None) -> np.ndarray:
    return predict_rows(model, standardize(data.x, spec), device, amp_dtype=amp_dtype)


class FeatureTask(TrainTask):
    def load(self) -> tuple[FeatureArrays, FeatureArrays]:
        args = self.args
        labels = split_labels(args.labels)
        subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None

        def read(source, split, limit, names=labels):
            return load_features(source, split, names, subjects, limit, args.seed)

        train, val = train_and_val(args, read, feature_splits(args.data), stratified_split)
        if val.x.shape[1] != train.x.shape[1]:
            raise SystemExit(f"{args.val_data} has {val.x.shape[1]} feature columns, {args.data} {train.x.shape[1]}")
        mean, std = standardization(train.x)
        self.spec = FeatureSpec(length=train.x.shape[1], mean=mean, std=std, names=train.columns)
        self.labels = train.labels
        return train, val

    def epoch(self, model, train: FeatureArrays, opt, sched, gen, amp_dtype, scaler) -> dict:
        args = self.args
        weights = device_class_weights(train.class_counts(), args)
        return feature_epoch(model, train, self.spec, opt, sched, args, gen, weights, amp_dtype, scaler)

    def evaluate(self, model, data: FeatureArrays, amp_dtype) -> dict:
        logits = feature_logits(model, data, self.spec, self.args.device, amp_dtype)
        return {**classification_metrics(logits, data.targets, data.labels), "_logits": logits}

    def dataset(self, train: FeatureArrays, val: FeatureArrays) -> dict:
        return {
            "features": train.x.shape[1],
            "subjects": sorted({str(s) for s in train.subjects} - {""}),
            "train_class_counts": class_counts_dict(train.labels, train.class_counts()),
            "val_class_counts": class_counts_dict(val.labels, val.class_counts()),
        }
