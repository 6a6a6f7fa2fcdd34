"""Grow a published ``emotion_cnn`` into a wider one that computes the same function (Net2WiderNet).

Training a wide net from scratch takes hundreds of epochs; a widened copy of a trained one starts where the trained
one is and only has to learn what the extra width adds. Each new channel (or hidden unit) copies a random existing
one, and the layer after it splits that unit's outgoing weights between the copies in random shares that sum to
one: the output is unchanged, yet the copies receive different gradients, so they drift apart in training.

    python -m training.widen --model model_store/fer_emotion_cnn/1.3.0 --width 48 --hidden 384 \\
        --output runs/wide48/init.safetensors
    python -m training.train --arch emotion_cnn --arch-args '{"width": 48, "hidden": 384}' \\
        --finetune runs/wide48/init.safetensors ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from training.export_slim import save_slim
from training.models.face import EmotionCNN
from training.runs import load_store_model


def unit_map(old: int, new: int, gen: torch.Generator) -> torch.Tensor:
    """Which old unit each new unit copies: the old ones first, in order, then random picks."""
    if new < old:
        raise ValueError(f"cannot widen {old} units to {new}: the new width must be at least the old one")
    return torch.cat([torch.arange(old), torch.randint(0, old, (new - old,), generator=gen)])


def split_shares(mapping: torch.Tensor, old: int, gen: torch.Generator) -> torch.Tensor:
    """A positive share per new unit; the copies of one old unit share 1 between them."""
    raw = torch.empty(len(mapping)).uniform_(0.5, 1.5, generator=gen)
    totals = torch.zeros(old).index_add_(0, mapping, raw)
    return raw / totals[mapping]


def copy_bn(dst: nn.Module, src: nn.Module, mapping: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[mapping])


def conv_blocks(model: EmotionCNN) -> list[nn.Sequential]:
    return [m for m in model.features if isinstance(m, nn.Sequential)]


@torch.no_grad()
def widen(src: EmotionCNN, width: int, hidden: int, seed: int = 0) -> EmotionCNN:
    """A wider ``EmotionCNN`` equal to ``src`` in eval mode (up to float rounding)."""
    first = conv_blocks(src)[0][0]
    spatial = src.head[2].in_features // conv_blocks(src)[-1][0].out_channels
    dst = EmotionCNN(src.head[-1].out_features, first.in_channels, width, hidden, src.head[1].p).eval()
    gen = torch.Generator().manual_seed(seed)
    incoming: tuple[torch.Tensor, torch.Tensor] | None = None  # (map, shares) of the previous layer's units
    for block_s, block_d in zip(conv_blocks(src), conv_blocks(dst), strict=True):
        weight = block_s[0].weight
        if incoming is not None:
            weight = weight[:, incoming[0]] * incoming[1].view(1, -1, 1, 1)
        mapping = unit_map(block_s[0].out_channels, block_d[0].out_channels, gen)
        block_d[0].weight.copy_(weight[mapping])
        copy_bn(block_d[1], block_s[1], mapping)
        incoming = (mapping, split_shares(mapping, block_s[0].out_channels, gen))
    channels, shares = incoming
    columns = (channels[:, None] * spatial + torch.arange(spatial)).flatten()
    fc1 = src.head[2].weight[:, columns] * shares.repeat_interleave(spatial)
    hidden_map = unit_map(src.head[2].out_features, hidden, gen)
    dst.head[2].weight.copy_(fc1[hidden_map])
    copy_bn(dst.head[3], src.head[3], hidden_map)
    hidden_shares = split_shares(hidden_map, src.head[2].out_features, gen)
    dst.head[6].weight.copy_(src.head[6].weight[:, hidden_map] * hidden_shares)
    dst.head[6].bias.copy_(src.head[6].bias)
    return dst


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a published emotion_cnn store entry")
    parser.add_argument("--width", type=int, required=True, help="channels of the first stage (emotion_cnn: 32)")
    parser.add_argument("--hidden", type=int, required=True, help="units of the head's hidden layer (256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True, help="safetensors file for training.train --finetune")
    return parser


def main(args: argparse.Namespace) -> None:
    model, manifest = load_store_model(args.model)
    if not isinstance(model, EmotionCNN):
        raise SystemExit(f"--model {manifest.key} is a {manifest.architecture}; only emotion_cnn can be widened")
    try:
        wide = widen(model, args.width, args.hidden, args.seed)
    except ValueError as exc:
        raise SystemExit(f"--width/--hidden: {exc}") from None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_slim(wide, args.output, {"architecture": manifest.architecture, "labels": ",".join(manifest.labels)})
    params = sum(p.numel() for p in wide.parameters())
    print(f"{manifest.key} widened to width {args.width}, hidden {args.hidden}: {params:,} parameters -> {args.output}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
