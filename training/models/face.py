"""Still-face architectures: the compact default CNN, a small-input ResNet, a binary attribute CNN and a ResNet-18
multi-task net."""

from __future__ import annotations

import torch
from torch import nn

from training.models.layers import conv_bn_relu, resnet_stages
from training.models.registry import register_model

# FER2013 crops show more context than a face detector's tight box: 0.2 per side matches them best on real photos.
GRAY48 = {"height": 48, "width": 48, "channels": 1, "mean": [0.5], "std": [0.25], "face_margin": 0.2}
RGB112 = {
    "height": 112,
    "width": 112,
    "channels": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "face_margin": 0.1,
}


class EmotionCNN(nn.Module):
    """VGG-style CNN for small grayscale faces: 4 stages of two 3x3 convs, a 3x3 spatial map, an MLP head.

    Faces arrive aligned, so the head keeps the 3x3 layout (flatten) rather than averaging it away.
    """

    def __init__(
        self, num_classes: int, in_chans: int = 1, width: int = 32, hidden: int = 256, dropout: float = 0.4
    ) -> None:
        super().__init__()
        layers, cin = [], in_chans
        for mult in (1, 2, 4, 8):
            layers += [conv_bn_relu(cin, width * mult), conv_bn_relu(width * mult, width * mult), nn.MaxPool2d(2)]
            cin = width * mult
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(3))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(cin * 9, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(task="face-classification", input=GRAY48)
def emotion_cnn(num_classes: int = 7, **kwargs) -> nn.Module:
    """The default face-expression model (~1.8M parameters at width 32)."""
    return EmotionCNN(num_classes, **kwargs)


@register_model(task="binary-attribute", input=GRAY48, width=16, hidden=64)
def attribute_cnn(num_classes: int = 2, **kwargs) -> nn.Module:
    """A narrow EmotionCNN for one yes/no attribute (e.g. a single emotion detector, as in the cartoon suite)."""
    return EmotionCNN(num_classes, **kwargs)


class ResNetFace(nn.Module):
    """ResNet-18 layout for 48-pixel faces: a stride-1 3x3 stem (ImageNet's 7x7 stride-2 stem and max-pool would
    leave a 48-pixel face 12 pixels wide before the first block), four stages down to 3x3, global average pool."""

    def __init__(self, num_classes: int, in_chans: int = 1, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.stem = conv_bn_relu(in_chans, width)
        self.trunk = resnet_stages(widths, strides=[2, 2, 2, 2])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.stem(x)))


@register_model(task="face-classification", input=GRAY48)
def resnet_face(num_classes: int = 7, **kwargs) -> nn.Module:
    """A second, structurally different face classifier (~2.8M parameters at width 32), e.g. for ensembles."""
    return ResNetFace(num_classes, **kwargs)


class ResNetMultiTask(nn.Module):
    """ResNet-18 trunk with a classification head and a valence/arousal head in [-1, 1] (seed 003)."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(conv_bn_relu(in_chans, width, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.trunk = resnet_stages(widths)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(widths[-1], num_classes)
        self.valence_arousal = nn.Sequential(nn.Linear(widths[-1], 2), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.pool(self.trunk(self.stem(x)))
        return self.classifier(feat), self.valence_arousal(feat)


@register_model(task="face-multitask", input=RGB112, outputs=("logits", "valence_arousal"), width=32)
def resnet18_multitask(num_classes: int = 7, **kwargs) -> nn.Module:
    """ResNet-18 multi-task net; width 32 keeps it ~2.8M parameters (64 is the classic 11M)."""
    return ResNetMultiTask(num_classes, **kwargs)
