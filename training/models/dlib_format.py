"""A reader for dlib's DNN serialisation (``dlib::serialize(net, out)``), enough for its image networks.

dlib writes a network from the loss layer down: each ``add_layer`` writes its version and then its sub-network
before its own details, so after a run of version numbers (tags and skips write nothing else) the input layer
comes first and the computational layers follow **from input to output**. ``read_dlib_net`` returns them in that
order with their weights as numpy arrays; what the layers mean (the topology, tags and skips) is the caller's
knowledge (``training.models.dlib_resnet`` builds the face-recognition ResNet from it).

Encodings (``dlib/serialize.h``, ``dlib/dnn/tensor.h``): an integer is one byte (bit 7: sign, low nibble: byte
count) and that many little-endian bytes; a string is an integer length and its bytes; a float or double is two
integers, mantissa and base-2 exponent; a bool is the character ``'0'`` or ``'1'``; a tensor is version 2, four
dimensions and its values as little-endian float32; an alias tensor is version 1 and four dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The file is not a dlib network of the kind this reader knows; the message says where it stopped."""


@dataclass
class DlibLayer:
    """One computational layer: dlib's type tag (``con_4``, ``affine_``, ...), its settings and its weights."""

    kind: str
    settings: dict = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: str
    input: str
    input_mean: tuple[float, ...]  # per channel, subtracted from 0-255 pixels (dlib then divides by 256)
    input_size: tuple[int, int] | None
    layers: list[DlibLayer]


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"byte {self.pos}: {what}")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self) -> int:
        head = self.byte()
        n = head & 0x0F
        if n > 8 or self.pos + n > len(self.data):
            raise self.fail(f"not an integer (header byte {head:#x})")
        value = int.from_bytes(self.data[self.pos : self.pos + n], "little")
        self.pos += n
        return -value if head & 0x80 else value

    def str(self) -> str:
        n = self.int()
        if not 0 <= n <= 256:
            raise self.fail(f"implausible string length {n}")
        text = self.data[self.pos : self.pos + n]
        self.pos += n
        return text.decode("ascii", errors="replace")

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        c = self.byte()
        if c not in (ord("0"), ord("1")):
            raise self.fail(f"not a bool ({c:#x})")
        return c == ord("1")

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        if self.pos + 4 * count > len(self.data):
            raise self.fail(f"tensor of shape {dims} runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return values.reshape(dims)

    def alias(self) -> tuple[int, ...]:
        self.int()  # version
        return tuple(self.int() for _ in range(4))


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """dlib keeps a layer's parameters in one tensor; alias tensors cut it into pieces of these shapes."""
    flat, out, start = params.reshape(-1), [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def _con(s: _Stream) -> DlibLayer:
    params = s.tensor()
    filters, rows, cols = s.int(), s.int(), s.int()
    stride = (s.int(), s.int())
    padding = (s.int(), s.int())
    filter_shape, bias_shape = s.alias(), s.alias()
    _ = [s.float() for _ in range(4)]  # learning-rate and weight-decay multipliers
    weight, bias = _split(params, filter_shape, (bias_shape[1],))
    settings = {"filters": filters, "kernel": (rows, cols), "stride": stride, "padding": padding}
    return DlibLayer("con", settings, {"weight": weight, "bias": bias})


def _affine(s: _Stream) -> DlibLayer:
    params = s.tensor()
    gamma, beta = s.alias(), s.alias()
    mode = s.int()
    g, b = _split(params, (gamma[1] * gamma[2] * gamma[3],), (beta[1] * beta[2] * beta[3],))
    return DlibLayer("affine", {"mode": "conv" if mode == 0 else "fc"}, {"gamma": g, "beta": b})


def _pool(kind: str):
    def read(s: _Stream) -> DlibLayer:
        rows, cols, sy, sx, py, px = (s.int() for _ in range(6))
        return DlibLayer(kind, {"window": (rows, cols), "stride": (sy, sx), "padding": (py, px)})

    return read


def _fc(s: _Stream) -> DlibLayer:
    outputs, inputs = s.int(), s.int()
    params = s.tensor()
    weight_shape, bias_shape = s.alias(), s.alias()
    has_bias = s.int() == 0  # dlib's FC_HAS_BIAS is 0, FC_NO_BIAS 1
    _ = [s.float() for _ in range(4)]
    shapes = [weight_shape[:2]] + ([(bias_shape[1],)] if has_bias else [])
    pieces = _split(params, *shapes)
    weights = {"weight": pieces[0].T.copy()}  # dlib multiplies inputs (N x in) by W (in x out)
    if has_bias:
        weights["bias"] = pieces[1]
    return DlibLayer("fc", {"outputs": outputs, "inputs": inputs}, weights)


# dlib's version tag of each layer's details -> its reader
_READERS = {
    "con_4": _con,
    "affine_": _affine,
    "relu_": lambda s: DlibLayer("relu"),
    "add_prev_": lambda s: DlibLayer("add_prev"),
    "max_pool_2": _pool("max_pool"),
    "avg_pool_2": _pool("avg_pool"),
    "fc_2": _fc,
}


def _input_layer(s: _Stream) -> tuple[str, tuple[float, ...], tuple[int, int] | None]:
    name = s.str()
    if name not in ("input_rgb_image_sized", "input_rgb_image"):
        raise s.fail(f"input layer {name!r} is not one this reader knows (an RGB image input)")
    mean = (s.float(), s.float(), s.float())
    size = (s.int(), s.int()) if name == "input_rgb_image_sized" else None
    return name, mean, size


def _layer_tail(s: _Stream, version: int) -> None:
    """What ``add_layer`` writes after its details: three bools and its cached tensors (empty in a saved model)."""
    for _ in range(3):
        s.bool()
    for _ in range(3 if version >= 2 else 2):  # x_grad, cached_output (+ params_grad from version 2)
        s.tensor()
    if version >= 3:  # the layer right above the input also records the input's sample expansion factor
        s.int()


def read_dlib_net(path: Path) -> DlibNet:
    """The layers of a dlib network file, from input to output, with their weights."""
    s = _Stream(Path(path).read_bytes())
    s.int()  # add_loss_layer version
    loss = s.str()
    if not loss.startswith("loss_"):
        raise s.fail(f"expected a loss layer first, found {loss!r}: not a dlib network file")
    if loss.startswith("loss_metric"):
        s.float(), s.float()  # margin and distance threshold
    versions = []
    while s.data[s.pos] == 0x01 and s.data[s.pos + 1] in (1, 2, 3):  # one per add_layer, tag and skip
        versions.append(s.int())
    if not versions:
        raise s.fail("no layers after the loss layer")
    input_name, mean, size = _input_layer(s)
    layer_versions = [v for v in reversed(versions) if v != 1]  # tags and skips (version 1) write no details
    layers = []
    for version in layer_versions:
        kind = s.str()
        if kind not in _READERS:
            raise s.fail(f"layer type {kind!r} is not one this reader knows ({', '.join(_READERS)})")
        layers.append(_READERS[kind](s))
        _layer_tail(s, version)
    if s.pos != len(s.data):
        raise s.fail(f"{len(s.data) - s.pos} bytes left after the last layer")
    return DlibNet(loss, input_name, mean, size, layers)
