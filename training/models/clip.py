"""Clip architectures over face-crop sequences ``NxCxTxHxW``: 3D-ResNet-18 + BiLSTM (seed 004), SlowFast (seed 002)."""

from __future__ import annotations

import torch
from torch import nn

from training.models.layers import conv_bn_relu, resnet_stages
from training.models.registry import register_model

CLIP_GRAY = {"height": 48, "width": 48, "channels": 1, "mean": [0.5], "std": [0.25], "frames": 8}
SPATIAL = (1, 2, 2)


class R3DBiLSTM(nn.Module):
    """3D-ResNet-18 trunk (time kept, space pooled) -> bidirectional LSTM over time -> MLP head."""

    def __init__(
        self, num_classes: int, in_chans: int = 1, width: int = 16, hidden: int = 64, dropout: float = 0.5
    ) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.stem = conv_bn_relu(in_chans, width, 3, 1, dims=3)
        self.trunk = resnet_stages(widths, dims=3, strides=[1, SPATIAL, SPATIAL, SPATIAL])
        self.lstm = nn.LSTM(widths[-1], hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.trunk(self.stem(x)).mean(dim=(3, 4))  # N x C x T
        seq, _ = self.lstm(feat.transpose(1, 2))
        return self.head(seq.mean(dim=1))


@register_model(task="clip-classification", input=CLIP_GRAY)
def r3d18_bilstm(num_classes: int = 7, **kwargs) -> nn.Module:
    return R3DBiLSTM(num_classes, **kwargs)


class SlowFast(nn.Module):
    """Two pathways: *slow* sees every ``alpha``-th frame with wide channels, *fast* every frame with narrow ones;
    a time-strided lateral conv feeds fast into slow after the stem; both are pooled and concatenated."""

    def __init__(
        self, num_classes: int, in_chans: int = 1, width: int = 32, alpha: int = 4, beta: int = 4, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.alpha = alpha
        fast_w = max(4, width // beta)
        self.fast_stem = conv_bn_relu(in_chans, fast_w, 3, 1, dims=3)
        self.slow_stem = conv_bn_relu(in_chans, width, 3, 1, dims=3)
        self.lateral = nn.Conv3d(fast_w, fast_w * 2, (5, 1, 1), (alpha, 1, 1), (2, 0, 0), bias=False)
        slow_widths = [width + fast_w * 2, width * 2, width * 4, width * 8]
        self.slow = resnet_stages(slow_widths, blocks=1, dims=3, strides=[1, SPATIAL, SPATIAL, SPATIAL])
        self.fast = resnet_stages(
            [fast_w, fast_w * 2, fast_w * 4, fast_w * 8], blocks=1, dims=3, strides=[1, SPATIAL, SPATIAL, SPATIAL]
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width * 8 + fast_w * 8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast_stem(x)
        slow = self.slow_stem(x[:, :, :: self.alpha])
        slow = torch.cat([slow, self.lateral(fast)], dim=1)
        pooled = [self.slow(slow).mean(dim=(2, 3, 4)), self.fast(fast).mean(dim=(2, 3, 4))]
        return self.head(torch.cat(pooled, dim=1))


@register_model(task="clip-classification", input=CLIP_GRAY)
def slowfast_clip(num_classes: int = 7, **kwargs) -> nn.Module:
    return SlowFast(num_classes, **kwargs)
