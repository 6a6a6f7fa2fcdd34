"""ONNX export with a parity check: ``python -m training.export_onnx --run runs/x`` -> ``runs/x/export/model.onnx``.

Loads the slim weights, exports with a dynamic batch axis, runs the same inputs through torch and onnxruntime,
prints the largest absolute difference and fails when it exceeds ``--tolerance``. Written next to the slim weights
(the default), the graph holds no weights of its own: its initializers read ``model.safetensors``
(``model_store.linked``), so a store entry carries its weights once; ``--self-contained`` embeds them instead.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from model_store.linked import tensor_ranges
from training.engine import split_outputs
from training.runs import (
    ONNX_NAME,
    SLIM_NAME,
    build_model,
    example_input,
    input_spec,
    load_config,
    load_weights,
)

log = logging.getLogger("training.export_onnx")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="training run folder (after export_slim)")
    p.add_argument("--weights", type=Path, help=f"default: <run>/export/{SLIM_NAME}")
    p.add_argument("--output", type=Path, help=f"default: <run>/export/{ONNX_NAME}")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument(
        "--self-contained",
        action="store_true",
        help="embed the weights in the graph (no external data), for a runtime elsewhere (Triton, another runtime); "
        "a store entry's graph: python -m model_store.export_graph NAME VERSION OUT.onnx",
    )
    return p


def export(
    model: torch.nn.Module,
    example: torch.Tensor,
    outputs: list[str],
    path: Path,
    opset: int = 18,
    weights: Path | None = None,
) -> Path:
    """Export ``model`` with input ``input`` and a dynamic batch axis. Without ``weights``, one self-contained file;
    with ``weights`` (the model's slim safetensors, in the same folder), a graph whose initializers read that file
    (``model_store.linked``). The graph is left unfused, so its initializers are the state_dict's tensors by name;
    onnxruntime folds batch norms into convolutions itself when it loads the graph (``drop_zero_conv_bias``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        proto = drop_zero_conv_bias(_translate(model, example, outputs, opset, optimize=False))
        onnx.save(link_initializers(proto, weights), str(path))
        try:  # an op whose unfused translation onnxruntime cannot run (none of the registered architectures since
            # drop_zero_conv_bias; an imported checkpoint may have one): fall back to the fused, self-contained graph
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": example.numpy()})
            return path
        except Exception as exc:  # onnxruntime raises its own exception types
            log.warning("%s: the unfused graph does not run (%s); writing the fused, self-contained one", path, exc)
    onnx.save(_translate(model, example, outputs, opset, optimize=True), str(path))
    return path


def _translate(
    model: torch.nn.Module, example: torch.Tensor, outputs: list[str], opset: int, optimize: bool
) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(),
            (example,),
            None,
            input_names=["input"],
            output_names=outputs,
            opset_version=opset,
            dynamo=True,
            optimize=optimize,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto


def _is_zero_fill(name: str, producers: dict[str, onnx.NodeProto]) -> bool:
    """Whether ``name`` is a constant zero, possibly cast and broadcast (``Constant -> CastLike -> Expand``)."""
    node = producers.get(name)
    if node is None:
        return False
    if node.op_type in {"Expand", "CastLike"}:
        return _is_zero_fill(node.input[0], producers)
    if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
        return not numpy_helper.to_array(node.attribute[0].t).any()
    return False


def drop_zero_conv_bias(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The unfused translation gives a bias-free convolution a zero bias computed at run time (shaped from the
    weight, cast like the input). onnxruntime cannot fold a batch norm into a convolution whose bias is not a
    constant, so such a graph runs about 40% slower; the bias is optional in ONNX, so it is dropped, and the nodes
    that only computed it go with it."""
    graph = proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if (
            node.op_type in {"Conv", "ConvTranspose"}
            and len(node.input) == 3
            and _is_zero_fill(node.input[2], producers)
        ):
            del node.input[2]
    needed = {out.name for out in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output) or any(
            a.type == onnx.AttributeProto.GRAPH for a in node.attribute
        ):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    return proto


HALF_SUFFIX = ".float16"  # a float16 initializer's name; a Cast node gives the graph the float32 tensor


def link_initializers(proto: onnx.ModelProto, weights: Path) -> onnx.ModelProto:
    """Turn every initializer whose bytes equal the safetensors tensor of the same name into external data that
    points at those bytes (``weights`` must sit next to the ONNX file); the others stay inline. A tensor the file
    holds in float16 (``export_slim --half``) is linked as a float16 initializer followed by a Cast to float32,
    which onnxruntime folds when it loads the graph, so it runs as before."""
    ranges = tensor_ranges(weights)
    upcasts = []
    with open(weights, "rb") as fh:
        for init in proto.graph.initializer:
            if init.name not in ranges:
                continue
            offset, length, dtype, _ = ranges[init.name]
            fh.seek(offset)
            stored, value = fh.read(length), numpy_helper.to_array(init)
            if dtype == "F16" and value.dtype == np.float32:
                half = value.astype(np.float16)
                if half.tobytes() != stored or not np.array_equal(half.astype(np.float32), value):
                    continue
                upcasts.append(_as_half(init))
            elif stored != value.tobytes():
                continue
            _point_at(init, weights.name, offset, length)
    nodes = upcasts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _as_half(init: onnx.TensorProto) -> onnx.NodeProto:
    """Rename ``init`` to its float16 name and return the Cast that gives the graph its float32 tensor."""
    name = init.name
    init.name, init.data_type = name + HALF_SUFFIX, onnx.TensorProto.FLOAT16
    init.ClearField("float_data")
    return onnx.helper.make_node("Cast", [init.name], [name], name=f"{name}.upcast", to=onnx.TensorProto.FLOAT)


def _point_at(init: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    del init.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value


def parity(model: torch.nn.Module, path: Path, example: torch.Tensor) -> float:
    """Largest absolute difference between torch and onnxruntime over every output."""
    with torch.inference_mode():
        expected = [t.numpy() for t in split_outputs(model(example)) if t is not None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": example.numpy()})
    return max(float(np.abs(e - g).max()) for e, g in zip(expected, got, strict=True))


def main(args: argparse.Namespace) -> tuple[Path, float]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = load_config(args.run)
    weights = args.weights or args.run / "export" / SLIM_NAME
    model = load_weights(build_model(cfg), weights)
    spec = input_spec(cfg)
    out = args.output or args.run / "export" / ONNX_NAME
    beside = weights.parent.resolve() == out.parent.resolve()  # a copy elsewhere: self-contained
    linked = weights if beside and not getattr(args, "self_contained", False) else None
    out = export(model, example_input(spec, 2), cfg["outputs"], out, args.opset, linked)
    diff = parity(model, out, example_input(spec, 5, seed=1))
    log.info("wrote %s (%.2f MB); torch vs onnxruntime max abs diff %.2e", out, out.stat().st_size / 1e6, diff)
    if diff > args.tolerance:
        raise SystemExit(f"ONNX parity failed: max abs diff {diff:.2e} > tolerance {args.tolerance:.0e}")
    return out, diff


if __name__ == "__main__":
    main(get_args_parser().parse_args())
