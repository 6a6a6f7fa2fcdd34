"""Narrow a trained dlib face ResNet between each block's two convs, keeping the channels that carry most:
``python -m training.prune --weights W [--prefix members.1.] --inner 0.5 --data manifest.csv --output runs/p``.

A block's inner channels (conv1's outputs, conv2's inputs) never reach the residual path, so each block can lose
some without touching another. A channel's share is what it sends on: its mean activation after the ReLU over a
sample of training faces times the size of conv2's weights that read it. The lowest are dropped, and their mean
contribution moves into conv2's bias, so the narrowed net starts close to the wide one. Then fine-tune it with the
wide net as the teacher (``training.train --arch dlib_resnet --arch-args '{"inner": 0.5}' --finetune
<output>/pruned.safetensors --teacher <the wide net's store folder>``).

Writes ``pruned.safetensors`` (the narrowed weights) and ``prune.json`` (the channels kept per block, and the
narrowed net's agreement with the wide one on the sample).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from model_store import InputSpec, normalize
from training.data import load_faces
from training.models import create_model, get_model_cfg
from training.models.dlib_resnet import Block, DlibFaceResNet
from training.runs import load_weights

log = logging.getLogger("training.prune")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="slim safetensors or best.pt of a dlib_resnet")
    p.add_argument("--prefix", default="", help="the net's tensors under this prefix (an ensemble member: members.1.)")
    p.add_argument("--input-size", type=int, default=112, help="the side the net reads")
    p.add_argument("--inner", type=float, default=0.5, help="share of each block's inner channels to keep")
    p.add_argument("--data", type=Path, required=True, help="training faces to measure the channels on")
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


@torch.no_grad()
def inner_activity(model: DlibFaceResNet, x: torch.Tensor, batch: int = 64) -> tuple[list[torch.Tensor], np.ndarray]:
    """Per block, the mean of each inner channel's activation (after the ReLU between the convs) over ``x``; and
    the model's labels for ``x``, from the same pass."""
    blocks = list(model.blocks)
    sums = [torch.zeros(b.conv1.out_channels) for b in blocks]

    def hook(i: int) -> Callable:
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            sums[i] += torch.relu(output).mean(dim=(2, 3)).sum(dim=0)

        return record

    handles = [b.aff1.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        answers = labels(model, x, batch)
    finally:
        for h in handles:
            h.remove()
    return [t / len(x) for t in sums], answers


@torch.no_grad()
def labels(model: nn.Module, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The model's label for each row of ``x``, ``batch`` rows a call."""
    return torch.cat([model(x[s : s + batch]).argmax(1) for s in range(0, len(x), batch)]).numpy()


def channel_scores(block: Block, activity: torch.Tensor) -> torch.Tensor:
    """What each inner channel sends on: its mean activation times the norm of conv2's weights that read it."""
    return activity * block.conv2.weight.detach().flatten(start_dim=2).norm(dim=2).norm(dim=0)


def keep_channels(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` best channels, in their original order."""
    return torch.sort(torch.topk(scores, count).indices).values


@torch.no_grad()
def narrow_block(wide: Block, narrow: Block, keep: torch.Tensor, activity: torch.Tensor) -> None:
    """Copy ``wide``'s weights for the kept inner channels into ``narrow``; the dropped channels' mean output
    (their mean activation through conv2's weights, away from the border) joins conv2's bias."""
    dropped = torch.ones(len(activity), dtype=torch.bool)
    dropped[keep] = False
    narrow.conv1.weight.copy_(wide.conv1.weight[keep])
    narrow.conv1.bias.copy_(wide.conv1.bias[keep])
    narrow.aff1.weight.copy_(wide.aff1.weight[keep])
    narrow.aff1.bias.copy_(wide.aff1.bias[keep])
    narrow.conv2.weight.copy_(wide.conv2.weight[:, keep])
    lost = (wide.conv2.weight[:, dropped].sum(dim=(2, 3)) * activity[dropped]).sum(dim=1)
    narrow.conv2.bias.copy_(wide.conv2.bias + lost)
    narrow.aff2.load_state_dict(wide.aff2.state_dict())


def prune(wide: DlibFaceResNet, narrow: DlibFaceResNet, activity: list[torch.Tensor]) -> list[list[int]]:
    """Fill ``narrow`` (the same net with narrower blocks) from ``wide``, given ``wide``'s ``inner_activity``;
    returns the kept channels per block."""
    state = {k: v for k, v in wide.state_dict().items() if not k.startswith("blocks.")}
    narrow.load_state_dict(state, strict=False)
    kept = []
    for w, n, act in zip(wide.blocks, narrow.blocks, activity, strict=True):
        keep = keep_channels(channel_scores(w, act), n.conv1.out_channels)
        narrow_block(w, n, keep, act)
        kept.append(keep.tolist())
    return kept


def sample_inputs(args: argparse.Namespace, spec: InputSpec) -> tuple[torch.Tensor, np.ndarray]:
    faces = load_faces(args.data, "train", spec, None, args.samples, args.seed)
    return torch.from_numpy(normalize(faces.images, spec)), faces.targets


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cfg = get_model_cfg("dlib_resnet")
    spec = cfg.input.model_copy(update={"height": args.input_size, "width": args.input_size})
    wide = load_weights(create_model("dlib_resnet", 7), args.weights, args.prefix).eval()
    narrow = create_model("dlib_resnet", 7, inner=args.inner).eval()
    x, targets = sample_inputs(args, spec)
    activity, a = inner_activity(wide, x)
    kept = prune(wide, narrow, activity)
    b = labels(narrow, x)
    args.output.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in narrow.state_dict().items()}, args.output / "pruned.safetensors")
    report = {
        "weights": str(args.weights),
        "prefix": args.prefix,
        "inner": args.inner,
        "samples": len(x),
        "parameters": {"wide": count(wide), "narrow": count(narrow)},
        "agreement_with_wide": float((a == b).mean()),
        "accuracy": {"wide": float((a == targets).mean()), "narrow": float((b == targets).mean())},
        "kept": kept,
    }
    (args.output / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    agreement = report["agreement_with_wide"]
    log.info("kept %s of the inner channels; agreement with the wide net %.3f", args.inner, agreement)
    return report


def count(model: nn.Module) -> int:
    """Parameters, for the report."""
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
