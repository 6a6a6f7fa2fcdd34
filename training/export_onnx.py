"""ONNX export with a parity check: ``python -m training.export_onnx --run runs/x`` -> ``runs/x/export/model.onnx``.

Loads the slim weights, exports with a dynamic batch axis, runs the same inputs through torch and onnxruntime,
prints the largest absolute difference and fails when it exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

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
    return p


def export(model: torch.nn.Module, example: torch.Tensor, outputs: list[str], path: Path, opset: int = 18) -> Path:
    """Export ``model`` with input ``input`` and a dynamic batch axis; one self-contained file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=outputs,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return path


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
    model = load_weights(build_model(cfg), args.weights or args.run / "export" / SLIM_NAME)
    spec = input_spec(cfg)
    out = export(
        model, example_input(spec, 2), cfg["outputs"], args.output or args.run / "export" / ONNX_NAME, args.opset
    )
    diff = parity(model, out, example_input(spec, 5, seed=1))
    log.info("wrote %s (%.2f MB); torch vs onnxruntime max abs diff %.2e", out, out.stat().st_size / 1e6, diff)
    if diff > args.tolerance:
        raise SystemExit(f"ONNX parity failed: max abs diff {diff:.2e} > tolerance {args.tolerance:.0e}")
    return out, diff


if __name__ == "__main__":
    main(get_args_parser().parse_args())
