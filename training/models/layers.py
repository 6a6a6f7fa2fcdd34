"""Small building blocks shared by the architectures (no torchvision)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dims: int = 2) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    return nn.Sequential(conv(cin, cout, kernel, stride, kernel // 2, bias=False), norm(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block in 2D or 3D; ``stride`` may be an int or a per-axis tuple."""

    def __init__(self, cin: int, cout: int, stride: int | tuple = 1, dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        needs_proj = stride not in (1, (1, 1), (1, 1, 1)) or cin != cout
        self.shortcut = (
            nn.Sequential(conv(cin, cout, 1, stride, bias=False), norm(cout)) if needs_proj else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet_stages(widths: list[int], blocks: int = 2, dims: int = 2, strides: list | None = None) -> nn.Sequential:
    """``len(widths)`` stages of ``blocks`` basic blocks; the first block of each stage but the first downsamples."""
    strides = strides or [1] + [2] * (len(widths) - 1)
    layers, cin = [], widths[0]
    for width, stride in zip(widths, strides, strict=True):
        for i in range(blocks):
            layers.append(BasicBlock(cin, width, stride if i == 0 else 1, dims))
            cin = width
    return nn.Sequential(*layers)
