"""One model's input made from another's, inside the graph: how an ensemble joins members trained on different
crops (1.3.0's 48-px gray face beside a 112-px colour one) and still serves one preprocessing and one forward pass.

The steps are the ones ``model_store.preprocess`` takes for the member alone, written as fixed linear maps (undo
the ensemble's normalisation, RGB -> gray with OpenCV's weights, resample rows and columns with OpenCV's area or
linear weights, apply the member's normalisation), so they export to ONNX as a few multiplications. It is an
approximation: the member sees the crop resampled twice (to the ensemble's size, then to its own) where alone it is
resampled once, a slight blur (on the shipped pair: FER2013 val 0.668 vs 0.670 averaged outside the graph).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# OpenCV's BGR2GRAY weights, in the RGB order model inputs use.
GRAY_RGB = (0.299, 0.587, 0.114)
# the fields of a face input that one preprocessing fixes: models that agree on them can share a batch
SHARED_INPUT = ("height", "width", "channels", "mean", "std")


def resize_matrix(src: int, dst: int) -> torch.Tensor:
    """``dst x src`` weights that resample one line of pixels as ``cv2.resize`` does: area averaging when
    shrinking (INTER_AREA), linear interpolation with half-pixel centres when enlarging (INTER_LINEAR)."""
    if src < 1 or dst < 1:
        raise ValueError(f"cannot resample {src} pixels to {dst}")
    m = torch.zeros(dst, src, dtype=torch.float64)
    if dst < src:
        scale = src / dst
        for i in range(dst):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(math.floor(lo), min(src, math.ceil(hi))):
                m[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    else:
        for i in range(dst):
            x = max(0.0, (i + 0.5) * src / dst - 0.5)
            j = min(math.floor(x), src - 1)
            frac = x - j if j < src - 1 else 0.0
            m[i, j] += 1.0 - frac
            m[i, min(j + 1, src - 1)] += frac
    return m.float()


def per_channel(values: list[float]) -> torch.Tensor:
    """A mean or std list as a ``Cx1x1`` tensor that broadcasts over ``NxCxHxW`` batches."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


class InputAdapter(nn.Module):
    """``source`` -> ``target`` model input (each a dict with height, width, channels, mean, std).

    ``gray_plane``: the target reads colour but is only ever given gray faces (an ensemble member routed to them),
    so the face is turned gray first, one plane is resampled instead of three, and that plane is repeated: a third
    of the resampling. A face whose planes are equal gets the same input; a nearly gray one (the route allows 2
    levels of 255 on average) gets its luma in all three."""

    def __init__(self, source: dict, target: dict, gray_plane: bool = False) -> None:
        super().__init__()
        if source["channels"] not in (1, 3) or target["channels"] not in (1, 3):
            raise ValueError("only gray (1) and colour (3) face inputs can be adapted")
        if gray_plane and (source["channels"], target["channels"]) != (3, 3):
            raise ValueError("gray_plane adapts a colour input for a colour model that is given gray faces only")
        self.identity = all(source[k] == target[k] for k in SHARED_INPUT) and not gray_plane
        self.to_gray = source["channels"] == 3 and (target["channels"] == 1 or gray_plane)
        self.to_colour = (source["channels"] == 1 or gray_plane) and target["channels"] == 3
        self.register_buffer("source_mean", per_channel(source["mean"]), persistent=False)
        self.register_buffer("source_std", per_channel(source["std"]), persistent=False)
        self.register_buffer("target_mean", per_channel(target["mean"]), persistent=False)
        self.register_buffer("target_std", per_channel(target["std"]), persistent=False)
        self.register_buffer("gray", torch.tensor(GRAY_RGB).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rows", resize_matrix(source["height"], target["height"]), persistent=False)
        self.register_buffer("cols", resize_matrix(source["width"], target["width"]).T.contiguous(), persistent=False)
        self.resize = (source["height"], source["width"]) != (target["height"], target["width"])

    @property
    def gray_plane(self) -> bool:
        """A colour target given one gray plane (what ``gray_plane`` asked for)."""
        return self.to_gray and self.to_colour

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        if self.to_gray:
            x = self.plane(x)
            if self.gray_plane:  # repeated after the resampling
                x = x.expand(-1, 3, -1, -1)
        else:
            x = x * self.source_std + self.source_mean  # pixels in 0..1
            if self.to_colour:
                x = x.expand(-1, 3, -1, -1)
            x = self.resample(x)
        return (x - self.target_mean) / self.target_std

    def plane(self, x: torch.Tensor) -> torch.Tensor:
        """A colour face as one gray plane at the target's size, in pixels of 0..1 (before the target's
        normalisation, which a model reading the plane itself folds into its first layer)."""
        x = ((x * self.source_std + self.source_mean) * self.gray).sum(dim=1, keepdim=True)
        return self.resample(x)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols) if self.resize else x
