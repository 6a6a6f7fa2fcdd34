"""Whole-frame architectures for multi-label frame attributes (seed 000: a suite of yes/no classifiers on 224 px
RGB video frames, MobileNet transfer learning there): a compact MobileNet-style backbone trained from scratch,
one logit per attribute (sigmoid, thresholded per attribute at serving)."""

from __future__ import annotations

import torch
from torch import nn

from training.models.layers import conv_bn_relu
from training.models.registry import register_model

RGB224 = {
    "height": 224,
    "width": 224,
    "channels": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "face_margin": 0.0,
}
# (output width multiplier, stride) of each depthwise-separable block, MobileNet v1's plan in short
PLAN = ((2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1), (32, 2))


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """A 3x3 depthwise conv then a 1x1 pointwise conv, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        conv_bn_relu(cin, cout, 1),
    )


class FrameMobileNet(nn.Module):
    """MobileNet-style trunk (a strided stem, then depthwise-separable blocks down to 1/32), global pooling and a
    linear layer with one logit per attribute; ~0.2M parameters at width 8."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        blocks, cin = [conv_bn_relu(in_chans, width, 3, 2)], width
        for mult, stride in PLAN:
            blocks.append(separable(cin, width * mult, stride))
            cin = width * mult
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))
        for m in self.modules():  # He init keeps activations alive through the deep trunk (torch's default fades)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(task="frame-attributes", input=RGB224)
def frame_mobilenet(num_classes: int = 4, **kwargs) -> nn.Module:
    """Compact RGB frame backbone for a suite of attributes."""
    return FrameMobileNet(num_classes, **kwargs)
