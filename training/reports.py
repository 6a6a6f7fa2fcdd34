"""Evaluation reports: metrics, per-class table, calibration, confusion-matrix and learning-curve PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np

from model_store import probabilities


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return probabilities(logits, temperature).astype(np.float64)


def confusion(targets: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(targets * n + preds, minlength=n * n).reshape(n, n)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == targets[sel]).mean() - conf[sel].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature minimising NLL (golden-section search on log T in [-3, 3])."""

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(p[np.arange(len(targets)), targets] + 1e-12).mean())

    lo, hi, ratio = -3.0, 3.0, (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return float(np.exp((lo + hi) / 2))


def classification_metrics(
    logits: np.ndarray, targets: np.ndarray, labels: list[str], temperature: float = 1.0
) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, NLL and ECE."""
    n = len(labels)
    probs = softmax(logits, temperature)
    cm = confusion(targets, probs.argmax(1), n)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(n), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    present = cm.sum(1) > 0
    return {
        "samples": len(targets),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "nll": float(-np.log(probs[np.arange(len(targets)), targets] + 1e-12).mean()),
        "ece": expected_calibration_error(probs, targets),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(cm[i].sum()),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """MSE and concordance correlation (CCC) per valence/arousal dimension, on rows with known targets."""
    known = np.isfinite(target).all(1)
    if not known.any():
        return {}
    out = {}
    for i, name in enumerate(("valence", "arousal")):
        p, t = pred[known, i], target[known, i]
        cov = ((p - p.mean()) * (t - t.mean())).mean()
        ccc = 2 * cov / (p.var() + t.var() + (p.mean() - t.mean()) ** 2 + 1e-12)
        out[name] = {"mse": float(((p - t) ** 2).mean()), "ccc": float(ccc)}
    return out


def plot_confusion(cm: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    cm_a = np.asarray(cm, dtype=float)
    norm = cm_a / np.maximum(cm_a.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.8 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm_a[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_learning_curves(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax1.plot(epochs, [h["val_nll"] for h in history], label="val NLL")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [h["train_accuracy"] for h in history], label="train accuracy (augmented)")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], label="val accuracy")
    ax2.plot(epochs, [h["val_macro_f1"] for h in history], label="val macro-F1")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, name: str, metrics: dict, labels: list[str]) -> None:
    """``<name>.json`` (metrics), ``<name>_per_class.json`` and ``<name>_confusion.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / f"{name}_per_class.json").write_text(json.dumps(metrics["per_class"], indent=2))
    title = f"{name}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
    plot_confusion(metrics["confusion_matrix"], labels, out_dir / f"{name}_confusion.png", title)
