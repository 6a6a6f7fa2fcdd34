"""int8 graphs on CPUs whose int8 dot products saturate: their weights narrowed to 7 bits at load.

onnxruntime multiplies uint8 activations by int8 weights. x86 CPUs with VNNI (AVX-512 VNNI, AVX-VNNI, AMX) add the
products in 32 bits. x86 CPUs without it (AVX2, or AVX-512 without VNNI: AMD Zen 1-3, Intel before Cascade Lake)
add pairs of products in 16 bits first, and a pair of 255 x 127 overflows them (saturates). The shipped int8 graphs
were quantised with the full 8-bit weight range, as VNNI computes it exactly. On an AVX2-only AMD EPYC they lost
3-5 points of accuracy that way (the models' RAF-DB val 0.869 -> 0.813 and 0.827 -> 0.779).

onnxruntime's remedy is ``reduce_range``: weights in 7 bits (-64..64), so that 2 x 255 x 64 fits 16 bits. The
stored graph is unchanged: ``narrow_weights`` halves each int8 weight (and the int32 bias computed with its scale)
and doubles the scale, in the loaded copy. Every product is then exact on every x86 CPU.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import numpy as np

CHOICES = ("auto", "7", "8")  # the setting: narrow where the CPU saturates, always, never
EXACT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # /proc/cpuinfo: 32-bit int8 dot products
WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul"})  # what onnxruntime runs as u8 x s8 products


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them, or None where there is no such file."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def saturates(machine: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU adds int8 products in 16 bits (x86 without VNNI). Other architectures widen exactly."""
    machine = (machine or platform.machine()).lower()
    if machine not in {"x86_64", "amd64", "i386", "i686", "x86"}:
        return False
    flags = cpu_flags() if flags is None else flags
    if flags is None:  # not Linux: numpy's own CPU probe knows AVX-512 VNNI (not AVX-VNNI: narrowing then)
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return True
        return not features.get("AVX512VNNI", False)
    return not (flags & EXACT_FLAGS)


def narrowed(setting: str = "auto") -> bool:
    """Whether int8 weights are narrowed to 7 bits under ``setting`` (one of ``CHOICES``) on this CPU."""
    if setting not in CHOICES:
        raise ValueError(f"int8 weight bits must be one of {', '.join(CHOICES)}, not {setting!r}")
    return setting == "7" or (setting == "auto" and host_saturates())


@functools.cache
def host_saturates() -> bool:
    """``saturates`` for this machine, read once: every model load and ``/models`` listing asks."""
    return saturates()


def narrow_weights(model) -> int:
    """Halve, in place, every int8 weight a Conv, Gemm or MatMul of ``model`` (an ``onnx.ModelProto`` in QDQ form)
    reads, and the int32 bias quantised with its scale; double their scales. Returns how many tensors changed: none
    where the weights are in 7 bits already (``training.quantize --reduce-range``)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    tensors = _weight_tensors(model, inits)
    if _in_7_bits(tensors):
        return 0
    for name in {scale for _, scales in tensors.values() for scale in scales}:  # each once, even if shared
        scale = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((scale * 2).astype(scale.dtype), name))
    for name, (values, _) in tensors.items():
        low, high = (-64, 64) if values.dtype == np.int8 else (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        half = np.clip(np.round(values.astype(np.float64) / 2), low, high).astype(values.dtype)
        inits[name].CopyFrom(numpy_helper.from_array(half, name))
    return len(tensors)


def weight_bits(model) -> int | None:
    """7 where every int8 weight of ``model``'s Conv, Gemm and MatMul nodes lies in -64..64 (narrowed at load, or
    quantised with ``--reduce-range``), 8 where one does not, None where it has none (a float graph)."""
    tensors = _weight_tensors(model, {i.name: i for i in model.graph.initializer})
    if not any(values.dtype == np.int8 for values, _ in tensors.values()):
        return None
    return 7 if _in_7_bits(tensors) else 8


def _in_7_bits(tensors: dict[str, tuple[np.ndarray, set[str]]]) -> bool:
    return all(np.abs(values).max(initial=0) <= 64 for values, _ in tensors.values() if values.dtype == np.int8)


def _weight_tensors(model, inits: dict) -> dict[str, tuple[np.ndarray, set[str]]]:
    """Each symmetric int8 weight or int32 bias a Conv, Gemm or MatMul reads through a DequantizeLinear, by name:
    its values and the names of the scales it is read with."""
    from onnx import numpy_helper

    producers = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, tuple[np.ndarray, set[str]]] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for name in node.input:
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
                continue
            if dq.input[0] in found:
                found[dq.input[0]][1].add(dq.input[1])
                continue
            values = numpy_helper.to_array(inits[dq.input[0]])
            zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else 0
            if values.dtype in (np.int8, np.int32) and not np.any(zero):  # not activations' uint8, nor asymmetric
                found[dq.input[0]] = (values, {dq.input[1]})
    return found


def narrow_bytes(graph: bytes) -> bytes:
    """``narrow_weights`` on a serialised graph."""
    import onnx

    model = onnx.load_from_string(graph)
    narrow_weights(model)
    return model.SerializeToString()


def as_served(graph: bytes, setting: str = "auto") -> bytes:
    """A serialised int8 graph as this CPU serves it under ``setting``: narrowed where ``narrowed`` says so."""
    return narrow_bytes(graph) if narrowed(setting) else graph
