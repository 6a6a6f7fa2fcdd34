"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, public domain/CC0) in torch, as a
backbone that already knows faces.

The network (dlib's ``dnn_face_recognition_ex.cpp``): a 7x7 stride-2 conv and a 3x3 stride-2 max pool, then
residual blocks of two 3x3 convs at 32 (x3), 64 (x4), 128 (x3), 256 (x3) and 256 (x1) channels, where the first
block of each stage after the first downsamples (a stride-2 conv beside a 2x2 average pool of its input), a global
average pool to 256 values and a 128-d descriptor layer. What differs from a torchvision ResNet, and what this
module reproduces so that dlib's weights give dlib's outputs:

- per-channel affine layers (a scale and a shift) where training had batch norm; they stay affine here and learn;
- stride-2 convolutions and pools have no padding (stride-1 convs pad by 1);
- the residual add takes tensors of different shapes and zero-fills what one lacks (channels, and rows and columns
  at the bottom-right): a down block adds a 64-channel result to a 32-channel shortcut, and at 150 px the last two
  down blocks add a 3x3 map to a 4x4 shortcut, then 1x1 to 2x2;
- input: RGB 0-255 minus the per-channel means stored in the file, divided by 256 (``DLIB_INPUT`` in manifest terms).

The emotion model replaces the descriptor layer with a new head on the 256 pooled values (``num_classes`` outputs);
``descriptor=True`` keeps dlib's 128-d layer (to check this module against dlib).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model_store.packaged import packaged_model
from training.models.dlib_format import DlibLayer, read_dlib_net
from training.models.registry import register_model

DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # what the file stores; read_dlib_net returns them too
# (x / 255 - mean) / std with these equals dlib's (x - mean_rgb) / 256
DLIB_INPUT = {
    "height": 112,
    "width": 112,
    "channels": 3,
    "mean": [round(m / 255.0, 6) for m in DLIB_MEAN_RGB],
    "std": [256.0 / 255.0] * 3,
    "face_margin": 0.2,
}
# (channels, stride of the first block) per stage, and blocks per stage: dlib's alevel4 ... alevel0
STAGES = ((32, 1, 3), (64, 2, 4), (128, 2, 3), (256, 2, 3), (256, 2, 1))


class Affine(nn.Module):
    """dlib's ``affine`` layer: ``x * gamma + beta`` per channel (batch norm frozen into a scale and a shift)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def zero_fill_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, each tensor zero-filled where it has no values
    (missing channels at the end, missing rows and columns at the bottom and right)."""
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]

    def fill(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        if (c, h, w) == tuple(shape):
            return t
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return fill(a) + fill(b)


class Block(nn.Module):
    """Two 3x3 convs with affine layers; a stride-2 block adds to a 2x2 average pool of its input. ``mid``: the
    channels between the two convs (``cout`` in dlib's net; fewer in a pruned one, ``training.prune``)."""

    def __init__(self, cin: int, cout: int, stride: int, mid: int | None = None) -> None:
        super().__init__()
        mid = mid or cout
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 0 if stride > 1 else 1)
        self.aff1 = Affine(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1)
        self.aff2 = Affine(cout)
        self.shortcut = nn.AvgPool2d(2, 2) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        return F.relu(zero_fill_add(out, self.shortcut(x)))


def inner_channels(cout: int, inner: float) -> int:
    """A block's channels between its convs at ``inner`` times its output's, in multiples of 8 (int8 kernels work
    in such groups)."""
    if not 0 < inner <= 1:
        raise ValueError(f"inner must be in (0, 1], got {inner}")
    return max(8, round(cout * inner / 8) * 8)


class DlibFaceResNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 3,
        dropout: float = 0.2,
        descriptor: bool = False,
        inner: float = 1.0,
    ) -> None:
        """``inner`` < 1 narrows every block between its two convs (a pruned net); the residual path keeps dlib's
        widths, so a block's output still adds to its shortcut."""
        super().__init__()
        if in_chans != 3:
            raise ValueError("dlib's face ResNet reads RGB images (in_chans=3); gray faces are given as 3 channels")
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, 2, 0), Affine(32), nn.ReLU(), nn.MaxPool2d(3, 2))
        blocks, cin = [], 32
        for cout, stride, count in STAGES:
            mid = inner_channels(cout, inner)
            blocks += [Block(cin if i == 0 else cout, cout, stride if i == 0 else 1, mid) for i in range(count)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if descriptor:
            self.head = nn.Linear(256, 128, bias=False)
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(256, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 256 pooled values the head reads."""
        return self.pool(self.blocks(self.stem(x)))

    def forward_plane(self, plane: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The logits of a gray face given as one plane of 0..1 pixels, where the net reads three planes normalised
        by ``mean`` and ``std`` (``Cx1x1``): the first conv's weights summed over the planes, each over its std,
        and the means moved into its bias. Exact, because that conv does not pad; an export folds both into one
        conv on one plane (a third of the stem's work, and no planes to repeat)."""
        conv = self.stem[0]
        weight = (conv.weight / std.unsqueeze(0)).sum(dim=1, keepdim=True)
        bias = conv.bias - (conv.weight * (mean / std).unsqueeze(0)).sum(dim=(1, 2, 3))
        x = self.stem[1:](F.conv2d(plane, weight, bias, conv.stride))
        return self.head(self.pool(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _expect(layer: DlibLayer, kind: str, **settings) -> DlibLayer:
    if layer.kind != kind or any(layer.settings.get(k) != v for k, v in settings.items()):
        raise ValueError(f"dlib file: expected a {kind} layer {settings}, found {layer.kind} {layer.settings}")
    return layer


def _load_conv(conv: nn.Conv2d, layer: DlibLayer) -> None:
    stride = conv.stride
    _expect(layer, "con", filters=conv.out_channels, kernel=conv.kernel_size, stride=stride, padding=conv.padding)
    conv.weight.data.copy_(torch.from_numpy(layer.weights["weight"]))
    conv.bias.data.copy_(torch.from_numpy(layer.weights["bias"]))


def _load_affine(affine: Affine, layer: DlibLayer) -> None:
    _expect(layer, "affine")
    affine.weight.data.copy_(torch.from_numpy(layer.weights["gamma"]))
    affine.bias.data.copy_(torch.from_numpy(layer.weights["beta"]))


def load_dlib_weights(model: DlibFaceResNet, path: Path | None = None) -> DlibFaceResNet:
    """Copy the weights of dlib's file (default: the one ``face-recognition-models`` installed) into ``model``,
    checking every layer's kind and shape on the way; the descriptor layer only where ``model`` has one."""
    net = read_dlib_net(packaged_model(DLIB_FILE, "the dlib face ResNet backbone", path))
    params = iter(layer for layer in net.layers if layer.kind in ("con", "affine", "fc"))
    _load_conv(model.stem[0], next(params))
    _load_affine(model.stem[1], next(params))
    for block in model.blocks:
        _load_conv(block.conv1, next(params))
        _load_affine(block.aff1, next(params))
        _load_conv(block.conv2, next(params))
        _load_affine(block.aff2, next(params))
    fc = _expect(next(params), "fc", outputs=128, inputs=256)
    if isinstance(model.head, nn.Linear):
        model.head.weight.data.copy_(torch.from_numpy(fc.weights["weight"]))
    return model


@register_model(task="face-classification", input=DLIB_INPUT)
def dlib_resnet(num_classes: int = 7, pretrained: bool = False, **kwargs) -> nn.Module:
    """dlib's face-recognition ResNet with a new ``num_classes`` head (5.6M parameters); ``pretrained`` starts from
    dlib's weights, read from the installed ``face-recognition-models`` (training only: a published model carries
    its own weights)."""
    model = DlibFaceResNet(num_classes, **kwargs)
    return load_dlib_weights(model) if pretrained else model
