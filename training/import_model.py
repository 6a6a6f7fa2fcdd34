"""Publish a checkpoint made elsewhere into the store, with a full manifest, so the service serves it.

    python -m training.import_model --onnx model.onnx --spec spec.json --store model_store
    python -m training.import_model --weights model.pth --architecture feature_cnn_bilstm \\
        [--arch-args '{"hidden": 64}'] --spec spec.json --store model_store

``spec.json`` holds ``name``, ``version``, ``task``, ``labels`` and ``input`` in the shape ``GET /models`` shows it
(``height``, ``width``, ``channels``, ``mean``, ``std``, ``face_margin`` for images; ``length`` and optional
per-feature ``mean``/``std`` for feature vectors), and may add ``thresholds`` (frame-attributes),
``calibration_temperature``, ``outputs``, ``valence_arousal`` and ``description``.

An ONNX file is checked (one input of the spec's shape with a free batch axis, an output per label) and run once on
zeros. One that keeps its weights in external data is read with the data files beside it (a store entry's
``model.onnx`` with its ``model.safetensors`` and any entry it links) and published self-contained. Weights (a
``state_dict`` in ``.pt``/``.pth``, loaded weights-only, or ``.safetensors``) are loaded into the registered
architecture, exported to ONNX and the ``torch.export`` program, and the ONNX is compared with torch; with both
``--onnx`` and ``--weights`` the given ONNX is compared with the weights. The check is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from model_store import DEFAULT_ROOT, Manifest, Predictor, StoreEntry, StoreError, publish, read_manifest
from model_store.linked import embed_external_data, entry_graph, external_locations
from model_store.manifest import MANIFEST_NAME, FileRole
from training.artifacts import write_artifacts
from training.export_onnx import parity
from training.models import create_model, input_kwargs
from training.runs import example_input

log = logging.getLogger("training.import_model")
REFUSED = (
    "{path} holds a pickled Python object (a whole model, or a checkpoint with custom classes), not a state_dict; "
    "loading it would run arbitrary code. Where the model is defined, save its weights alone: "
    "torch.save(model.state_dict(), 'weights.pt') (or safetensors.torch.save_file(model.state_dict(), "
    "'weights.safetensors')) and import that file."
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, required=True, help="JSON: name, version, task, labels, input (+ optional)")
    p.add_argument("--onnx", type=Path, help="an ONNX export with a dynamic batch axis")
    p.add_argument("--weights", type=Path, help="state_dict: .pt, .pth (weights-only) or .safetensors")
    p.add_argument("--architecture", help="registered architecture the weights belong to (with --weights)")
    p.add_argument("--arch-args", type=json.loads, default={}, help="JSON kwargs of the architecture")
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest torch/ONNX difference accepted")
    p.add_argument("--no-torch-program", action="store_true", help="skip model.pt2 (the torch backend's file)")
    p.add_argument("--overwrite", action="store_true")
    return p


def read_spec(args: argparse.Namespace, outputs: list[str] | None) -> Manifest:
    """The manifest the spec describes; SystemExit naming the file and every problem."""
    try:
        spec = json.loads(args.spec.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{args.spec}: cannot read the spec as JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SystemExit(f"{args.spec}: expected a JSON object with name, version, task, labels and input")
    spec.setdefault("architecture", args.architecture or "imported")
    if args.architecture:
        spec["architecture"], spec["architecture_args"] = args.architecture, args.arch_args
    if outputs and "outputs" not in spec:
        spec["outputs"] = outputs
    try:
        return Manifest(**{k: v for k, v in spec.items() if k not in {"files", "created"}})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"{args.spec}: {problems}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name, without unpickling code: safetensors, or ``torch.load(weights_only=True)`` (a checkpoint
    dict's ``state_dict``/``model`` entry is taken; a ``module.`` prefix from DataParallel is dropped)."""
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise SystemExit(REFUSED.format(path=path)) from None
        except (OSError, RuntimeError, EOFError) as exc:
            raise SystemExit(f"{path}: not a torch weights file: {exc}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SystemExit(f"{path}: expected a state_dict (parameter name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(args: argparse.Namespace, manifest: Manifest) -> torch.nn.Module:
    try:
        model = create_model(args.architecture, len(manifest.labels), **input_kwargs(manifest.input), **args.arch_args)
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"--architecture {args.architecture}: {exc}") from None
    try:
        model.load_state_dict(read_state_dict(args.weights))
    except RuntimeError as exc:
        raise SystemExit(f"{args.weights} does not fit {args.architecture} {args.arch_args}: {exc}") from None
    return model.eval()


def onnx_outputs(path: Path) -> list[str]:
    """The ONNX file's output names (the first is taken as the logits)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SystemExit(f"{path}: onnxruntime cannot load it: {exc}") from None
    return [o.name for o in session.get_outputs()]


def check_onnx(path: Path, manifest: Manifest) -> str:
    """Input rank and fixed sizes against the spec, a free batch axis, then one run on zeros: shape and finiteness."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise SystemExit(f"{path}: {len(inputs)} inputs; the service feeds one ({[i.name for i in inputs]})")
    declared, expected = list(inputs[0].shape), [-1, *manifest.input.tensor_shape]
    if len(declared) != len(expected) or any(
        isinstance(d, int) and d != e for d, e in zip(declared[1:], expected[1:], strict=True)
    ):
        raise SystemExit(f"{path}: input {inputs[0].name!r} is {declared}; the spec's input gives {expected}")
    if isinstance(declared[0], int) and declared[0] > 0:
        raise SystemExit(
            f"{path}: the batch axis is fixed at {declared[0]}; the service batches rows across requests. Re-export "
            "with a dynamic first axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
        )
    outputs = session.run(manifest.outputs, {inputs[0].name: np.zeros((2, *expected[1:]), np.float32)})
    first = outputs[0]
    if first.shape != (2, len(manifest.labels)):
        raise SystemExit(
            f"{path}: output {manifest.outputs[0]!r} has shape {list(first.shape)} for 2 rows; the spec's "
            f"{len(manifest.labels)} labels need [2, {len(manifest.labels)}]"
        )
    if not all(np.isfinite(o).all() for o in outputs):
        raise SystemExit(f"{path}: the outputs on zeros are not finite")
    return f"smoke check: 2 rows of zeros -> {manifest.outputs[0]} {list(first.shape)}, finite"


def artifacts_for(args: argparse.Namespace, manifest: Manifest, tmp: Path) -> tuple[dict[FileRole, Path], str]:
    """The files to publish and a line saying how they were checked."""
    if args.weights is None:
        return {"onnx": args.onnx}, check_onnx(args.onnx, manifest)
    model = load_weights(args, manifest)
    meta = {"architecture": args.architecture, "labels": ",".join(manifest.labels)}
    artifacts, diff = write_artifacts(
        model, manifest.input, manifest.outputs, tmp, meta, not args.no_torch_program, args.tolerance
    )
    check = f"parity: torch vs onnxruntime (exported here) max abs diff {diff:.2e} on 5 random rows"
    if args.onnx is not None:  # theirs, compared with the weights
        theirs = parity(model, args.onnx, example_input(manifest.input, 5, seed=1))
        if theirs > args.tolerance:
            raise SystemExit(f"{args.onnx} and {args.weights} disagree: max abs diff {theirs:.2e}")
        artifacts["onnx"] = args.onnx
        check = f"parity: torch ({args.weights.name}) vs onnxruntime ({args.onnx.name}) max abs diff {theirs:.2e}"
    return artifacts, f"{check}; {check_onnx(artifacts['onnx'], manifest)}"


def self_contained(path: Path, tmp: Path) -> Path:
    """``path`` itself when it holds its weights; else a copy in ``tmp`` with its external data embedded, read from
    beside it (a store entry: its manifest's files and links, checked); SystemExit saying what to pass otherwise."""
    try:
        locations = external_locations(path)
    except Exception as exc:  # onnx raises its own exception types
        raise SystemExit(f"{path}: not an ONNX graph onnx can read: {exc}") from None
    if not locations:
        return path
    folder = path.parent
    try:
        manifest = read_manifest(folder) if (folder / MANIFEST_NAME).is_file() else None
        if manifest is not None and manifest.file("onnx") and manifest.file("onnx").path == path.name:
            proto = entry_graph(StoreEntry(manifest, folder))
        else:
            proto = embed_external_data(path, beside(path, locations))
    except (StoreError, ValueError) as exc:
        raise SystemExit(f"{path}: {exc}") from None
    out = tmp / "self_contained" / path.name  # published under the source's name
    out.parent.mkdir()
    onnx.save(proto, str(out))
    log.info("%s keeps its weights in %s: embedded them", path, ", ".join(locations))
    return out


def beside(path: Path, locations: list[str]) -> dict[str, bytes]:
    """The external data files ``locations`` names, each a plain file beside ``path``; SystemExit otherwise."""
    files = {}
    for location in locations:
        source = path.parent / location
        if "/" in location or "\\" in location or location in {"", ".", ".."} or not source.is_file():
            raise SystemExit(
                f"{path} keeps its weights in external data ({location}) that is not a file beside it. Put the data "
                "files next to the graph, or pass a self-contained graph: for a store entry, python -m "
                "model_store.export_graph NAME VERSION OUT.onnx writes one; for your own export, "
                "onnx.save(onnx.load(PATH), OUT) (with the data beside PATH) or training.export_onnx --self-contained"
            )
        files[location] = source.read_bytes()
    return files


def main(args: argparse.Namespace):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.onnx is None and args.weights is None:
        raise SystemExit("give --onnx FILE, or --weights FILE --architecture NAME (or both)")
    if args.weights is not None and not args.architecture:
        raise SystemExit("--weights needs --architecture: the registered architecture the state_dict belongs to")
    for path in (args.onnx, args.weights):
        if path is not None and not path.is_file():
            raise SystemExit(f"{path}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        source = {"imported_from": str(args.onnx or args.weights)}
        if args.onnx is not None:
            args = argparse.Namespace(**{**vars(args), "onnx": self_contained(args.onnx, Path(tmp))})
        manifest = read_spec(args, onnx_outputs(args.onnx)[:1] if args.onnx else None)
        artifacts, check = artifacts_for(args, manifest, Path(tmp))
        source["check"] = check
        manifest = manifest.model_copy(update={"training": {**manifest.training, **source}})
        entry = publish(manifest, artifacts, args.store, overwrite=args.overwrite)
    Predictor.load(entry).warmup()  # loads as the service will
    print(f"{check}\npublished {entry.manifest.key} ({entry.manifest.task}) into {entry.folder}")
    return entry


if __name__ == "__main__":
    main(get_args_parser().parse_args())
