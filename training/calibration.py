"""Prior correction for a target domain: a per-label logit bias fitted on labelled development images.

A model trained on FER2013 and RAF-DB carries their label priors; real photos have others (more neutral, and
expressions that read as angry to a FER2013 model). Adding a bias ``b`` to the logits is the classic correction for
a shift of priors. It is fitted by minimising the class-balanced cross-entropy of ``softmax((z + b) / T)``, which is
convex in ``b`` and so has one answer. Labels without development images get no information from it: the fitted
biases are centred (mean 0 over the labels that have images) and the others keep 0, so an unseen label keeps its
standing against the average label instead of being pushed under by all the others. ``cross_validated`` reports what
the bias does on images it was not fitted on.
"""

from __future__ import annotations

import numpy as np

from model_store import probabilities


def balanced_nll_grad(logits, targets, bias, temperature, l2) -> tuple[float, np.ndarray]:
    n_labels = logits.shape[1]
    probs = probabilities(logits + bias, temperature)
    counts = np.bincount(targets, minlength=n_labels).astype(float)
    weight = 1.0 / (counts[targets] * max((counts > 0).sum(), 1))  # every present label weighs the same
    rows = np.arange(len(targets))
    loss = float(-(weight * np.log(probs[rows, targets] + 1e-12)).sum() + l2 * (bias**2).sum())
    onehot = np.eye(n_labels)[targets]
    grad = (weight[:, None] * (probs - onehot)).sum(0) / temperature + 2 * l2 * bias
    return loss, grad


def fit_logit_bias(
    logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0, l2: float = 1e-3, steps: int = 500
) -> np.ndarray:
    """The bias minimising the class-balanced NLL (plus a little L2), by gradient descent with backtracking,
    centred over the labels present in ``targets`` (absent labels: 0)."""
    bias = np.zeros(logits.shape[1])
    present = np.bincount(targets, minlength=logits.shape[1]) > 0
    loss, grad = balanced_nll_grad(logits, targets, bias, temperature, l2)
    lr = 1.0
    for _ in range(steps):
        step = np.where(present, grad, 0.0)
        if np.abs(step).max() < 1e-6:
            break
        trial = bias - lr * step
        trial_loss, trial_grad = balanced_nll_grad(logits, targets, trial, temperature, l2)
        if trial_loss <= loss:
            bias, loss, grad, lr = trial, trial_loss, trial_grad, lr * 1.5
        else:
            lr *= 0.5
    return np.where(present, bias - bias[present].mean(), 0.0)


def cross_validated(
    logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Logits of every image with the bias fitted on the other folds (stratified): an honest estimate."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(targets), int)
    for label in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == label))
        fold[idx] = np.arange(len(idx)) % folds
    out = np.empty_like(logits, dtype=np.float64)
    for k in range(folds):
        held = fold == k
        out[held] = logits[held] + fit_logit_bias(logits[~held], targets[~held], temperature)
    return out
