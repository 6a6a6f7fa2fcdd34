"""Reports for multi-label models: average precision and F1 per attribute, the threshold chosen per attribute on
val (the one that maximises its F1, stored in the manifest and applied by the service), and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

THRESHOLD_RANGE = (0.02, 0.98)  # a threshold at 0 or 1 would make an attribute always or never present


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum over the ranked scores (NaN without positives)."""
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = targets[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / positives)


def _prf(scores: np.ndarray, targets: np.ndarray, threshold: float) -> tuple[float, float, float]:
    pred = scores >= threshold
    tp = float((pred & (targets > 0.5)).sum())
    precision = tp / pred.sum() if pred.any() else 0.0
    recall = tp / targets.sum() if targets.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """The threshold with the best F1 on these rows (midpoints between sorted scores, within THRESHOLD_RANGE; of
    equally good ones the closest to 0.5); 0.5 when the rows hold no positive (or no negative) to choose by."""
    if targets.sum() == 0 or targets.sum() == len(targets):
        return 0.5
    s = np.unique(np.clip(scores, *THRESHOLD_RANGE))
    candidates = np.unique(np.concatenate([(s[1:] + s[:-1]) / 2, s, [0.5]]))
    f1 = np.array([_prf(scores, targets, t)[2] for t in candidates])
    best = candidates[f1 >= f1.max() - 1e-12]
    return float(np.clip(best[np.argmin(np.abs(best - 0.5))], *THRESHOLD_RANGE))


def attribute_metrics(probs: np.ndarray, targets: np.ndarray, labels: list[str], thresholds: list[float]) -> dict:
    """Per attribute: AP, precision/recall/F1 and accuracy at its threshold, positives; means over attributes
    (``accuracy``, ``macro_f1``, ``mean_ap``) and the mean binary cross-entropy (``nll``)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    per = {}
    for i, label in enumerate(labels):
        precision, recall, f1 = _prf(probs[:, i], targets[:, i], thresholds[i])
        per[label] = {
            "ap": average_precision(probs[:, i], targets[:, i]),
            "f1": f1,
            "precision": precision,
            "recall": recall,
            "accuracy": float(((probs[:, i] >= thresholds[i]) == (targets[:, i] > 0.5)).mean()),
            "threshold": float(thresholds[i]),
            "support": int(targets[:, i].sum()),
        }
    aps = [m["ap"] for m in per.values() if np.isfinite(m["ap"])]
    return {
        "samples": len(targets),
        "accuracy": float(np.mean([m["accuracy"] for m in per.values()])),
        "macro_f1": float(np.mean([m["f1"] for m in per.values()])),
        "mean_ap": float(np.mean(aps)) if aps else 0.0,
        "nll": float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean()),
        "per_attribute": per,
    }


def plot_attributes(metrics: dict, path: Path, title: str) -> None:
    names = list(metrics["per_attribute"])
    rows = metrics["per_attribute"]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4))
    ax.barh(y - 0.2, [np.nan_to_num(rows[n]["ap"]) for n in names], 0.4, label="average precision")
    ax.barh(y + 0.2, [rows[n]["f1"] for n in names], 0.4, label="F1 at the chosen threshold")
    for i, n in enumerate(names):
        ax.text(1.01, i, f"t={rows[n]['threshold']:.2f}", va="center", fontsize=8)
    ax.set(yticks=y, yticklabels=names, xlim=(0, 1), title=title)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_attribute_report(out_dir: Path, name: str, metrics: dict) -> None:
    """``<name>.json``, ``<name>_per_attribute.json`` and ``<name>_attributes.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(metrics, default=float).replace("NaN", "null"))
    (out_dir / f"{name}.json").write_text(json.dumps(clean, indent=2))
    (out_dir / f"{name}_per_attribute.json").write_text(json.dumps(clean["per_attribute"], indent=2))
    title = f"{name}: mean AP {metrics['mean_ap']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"
    plot_attributes(metrics, out_dir / f"{name}_attributes.png", title)
