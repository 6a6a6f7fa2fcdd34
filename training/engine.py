"""Step functions: optimiser and schedule, one training epoch, batched prediction."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model_store import InputSpec, merge_mirror, normalize, prepare_batch
from training.augment import augment_batch, mix_batch, on_canvas, reframe
from training.data import FaceArrays

log = logging.getLogger(__name__)


def resolve_amp(amp: str, device: str) -> torch.dtype | None:
    """``auto`` -> bf16 where the hardware runs it fast (CUDA, or a CPU with AVX512-BF16/AMX), else fp32."""
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        if device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            log.warning("--amp bf16 on a CPU without native bf16 (AVX512-BF16/AMX) is emulated: about 15x slower")
        return torch.bfloat16
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """Weight decay on weights only (not biases, norms or affine scales); with ``backbone_lr_scale`` every parameter
    outside ``model.head`` learns at ``lr * backbone_lr_scale`` (a pretrained trunk under a new head)."""
    groups = []
    for in_head in (True, False):
        named = [(n, p) for n, p in model.named_parameters() if n.startswith("head.") == in_head]
        scale = 1.0 if in_head else backbone_lr_scale
        for decayed in (True, False):
            params = [p for _, p in named if (p.ndim > 1) == decayed]
            if params:
                groups.append({"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr": lr * scale})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; use sgd or adamw")


def make_scheduler(
    opt: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine``: linear warm-up then cosine to 0; ``onecycle``: torch's one-cycle policy."""
    if name == "onecycle":
        peak = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=peak, total_steps=total_steps, pct_start=max(warmup_steps / total_steps, 0.05)
        )
    if name != "cosine":
        raise ValueError(f"unknown schedule {name!r}; use cosine or onecycle")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def split_outputs(out: torch.Tensor | tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Models return logits, or (logits, valence_arousal)."""
    return (out[0], out[1]) if isinstance(out, tuple | list) else (out, None)


def class_weights(counts: list[int], mode: str) -> torch.Tensor | None:
    """``balanced`` (1/n), ``sqrt`` (1/sqrt n) or ``none``; normalised to mean 1 over the training samples."""
    if mode == "none":
        return None
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    w = 1.0 / counts_t if mode == "balanced" else 1.0 / counts_t.sqrt()
    return w * counts_t.sum() / (w * counts_t).sum()


def batches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool = True) -> Iterator[np.ndarray]:
    order = torch.randperm(n, generator=gen).numpy()
    stop = n - batch_size + 1 if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


Batch = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
Loss = Callable[[torch.Tensor | tuple, torch.Tensor, np.ndarray], tuple[torch.Tensor, float]]


def run_epoch(model, n: int, batch: Batch, loss_fn: Loss, opt, sched, args, gen, amp_dtype, scaler=None) -> dict:
    """One pass over ``n`` training rows, whatever the task: ``batch(idx)`` gives the model input and targets of
    those rows (augmented), ``loss_fn(outputs, targets, idx)`` the loss and how many rows it got right.

    ``scaler`` (a ``torch.amp.GradScaler``) guards fp16 autocast against gradient underflow; bf16 needs none.
    """
    model.train()
    device = args.device
    total = 0
    correct = loss_sum = 0.0
    steps = list(batches(n, args.batch_size, gen))
    for idx in tqdm(steps, desc=f"epoch {args.epoch_display}", unit="step", leave=False, mininterval=5):
        x, y = batch(idx)
        with autocast(device, amp_dtype):
            out = model(x.to(device))
        loss, right = loss_fn(out, y.to(device), idx)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        sched.step()
        loss_sum += loss.item() * len(idx)
        correct += right
        total += len(idx)
    return {"train_loss": loss_sum / max(total, 1), "train_accuracy": correct / max(total, 1)}


@dataclass
class Teacher:
    """A frozen model whose calibrated probabilities become part of the targets (distillation): the student learns
    ``(1 - share) * labels + share * softmax(teacher / temperature)``, Hinton's soft targets at T = 1."""

    model: nn.Module
    temperature: float
    share: float

    @torch.no_grad()
    def soften(self, x: torch.Tensor, targets: torch.Tensor, device: str, amp_dtype) -> torch.Tensor:
        with autocast(device, amp_dtype):
            logits, _ = split_outputs(self.model(x.to(device)))
        probs = torch.softmax(logits.float() / self.temperature, dim=1).cpu()
        return (1 - self.share) * targets + self.share * probs


@dataclass
class TeacherTable:
    """A teacher that reads another input (another size, colour or architecture than the student's): its calibrated
    probabilities computed once per training row (``probs``, in the training set's row order) and blended into
    that row's targets, ``(1 - share) * labels + share * probs`` (offline distillation: the teacher saw each image
    un-augmented, with its own mirror TTA)."""

    probs: np.ndarray
    share: float

    def blend(self, targets: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return (1 - self.share) * targets + self.share * torch.from_numpy(self.probs[idx])


def train_one_epoch(
    model, data: FaceArrays, spec: InputSpec, opt, sched, args, gen, weights, amp_dtype, scaler=None, teacher=None
) -> dict:
    """One pass over face crops (or clips) with augmentation: cross-entropy (on mixed or distilled soft targets
    where asked), plus the valence/arousal MSE where the model has that head and the row has targets."""
    va_all = torch.from_numpy(data.valence_arousal)
    mixup, cutmix = args.mixup, args.cutmix
    consistency = args.consistency

    def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        aug = augment_batch(torch.from_numpy(data.images[idx]), args.augment, gen)
        if consistency > 0:  # a second view of each face, framed a little differently: rows n.. of the batch
            first, second = on_canvas(aug, args.canvas_prob, gen)
            aug = torch.cat([first, reframe(second, args.jitter_shift, args.jitter_scale, gen)])
            idx = np.concatenate([idx, idx])
        x, y = torch.from_numpy(normalize(aug.numpy(), spec)), torch.from_numpy(data.targets[idx])
        if mixup <= 0 and cutmix <= 0 and teacher is None:
            return x, y
        y = F.one_hot(y, len(data.labels)).float()  # soft targets from here
        if isinstance(teacher, TeacherTable):  # before mixing: a row's table entry mixes with its image
            y = teacher.blend(y, idx)
        x, y = mix_batch(x, y, mixup, cutmix, gen)
        return (x, teacher.soften(x, y, args.device, amp_dtype)) if isinstance(teacher, Teacher) else (x, y)

    def loss_fn(out, y: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, float]:
        logits, va = split_outputs(out)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=args.label_smoothing)
        if consistency > 0:
            loss = loss + consistency * view_disagreement(logits)
            idx = np.concatenate([idx, idx])
        if y.ndim == 2:  # mixed or distilled rows: count a row right when the larger share's label wins
            y = y.argmax(1)
        if va is not None:
            target = va_all[idx].to(y.device)
            known = torch.isfinite(target).all(dim=1)
            if known.any():
                loss = loss + args.va_weight * F.mse_loss(va.float()[known], target[known])
        right = (logits.argmax(1) == y).sum().item()
        return loss, right / 2 if consistency > 0 else right  # rows right per face: the views are one face twice

    return run_epoch(model, len(data), batch, loss_fn, opt, sched, args, gen, amp_dtype, scaler)


def view_disagreement(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric KL divergence between the two views' probabilities (rows ``:n`` and ``n:``), per row: zero when
    a face's label distribution does not move with its framing."""
    a, b = F.log_softmax(logits, dim=1).chunk(2)
    kl_ab = F.kl_div(a, b, log_target=True, reduction="batchmean")
    return 0.5 * (kl_ab + F.kl_div(b, a, log_target=True, reduction="batchmean"))


def _merged(out: torch.Tensor, n: int, tta: bool) -> np.ndarray:
    x = out.float().cpu().numpy()
    return merge_mirror(x, n) if tta else x


@torch.inference_mode()
def predict(
    model,
    images: np.ndarray,
    spec: InputSpec,
    device: str,
    batch_size: int = 512,
    tta: bool = True,
    amp_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (mean over the h-flip pair with ``tta``) and valence/arousal if the model has that head.

    The live-module counterpart of ``model_store.Predictor`` (used during training, before anything is exported);
    the mirror merge is the Predictor's own ``merge_mirror`` so the two cannot drift apart.
    """
    model.eval()
    logits_out, va_out = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = torch.from_numpy(prepare_batch(chunk, spec, hflip_tta=tta)).to(device)
        with autocast(device, amp_dtype):
            logits, va = split_outputs(model(x))
        logits_out.append(_merged(logits, len(chunk), tta))
        if va is not None:
            va_out.append(_merged(va, len(chunk), tta))
    return np.concatenate(logits_out), (np.concatenate(va_out) if va_out else None)


@torch.inference_mode()
def predict_rows(
    model, x: np.ndarray, device: str, batch_size: int = 1024, amp_dtype: torch.dtype | None = None
) -> np.ndarray:
    """Logits for already-preprocessed rows (standardised feature vectors), in batches, with the model in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        with autocast(device, amp_dtype):
            logits, _ = split_outputs(model(torch.from_numpy(x[start : start + batch_size]).to(device)))
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
