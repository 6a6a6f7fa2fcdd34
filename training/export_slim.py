"""Deployment-slim weights: ``python -m training.export_slim --run runs/x`` -> ``runs/x/export/model.safetensors``.

Only the ``state_dict`` (no optimiser, scheduler or pickled objects), as safetensors. With ``--torch-program`` it
also writes ``model.pt2``, a ``torch.export`` program (the graph, no pickled code) that the service's torch backend
runs without importing the training package; its weights are read from ``model.safetensors`` (``model_store.linked``).
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from model_store import FeatureSpec, InputSpec
from model_store.linked import program_links, tensor_ranges
from training.runs import (
    SLIM_NAME,
    TORCH_PROGRAM_NAME,
    build_model,
    example_input,
    input_spec,
    load_config,
    load_weights,
)

log = logging.getLogger("training.export_slim")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="training run folder")
    p.add_argument("--checkpoint", default="best.pt", help="file in the run folder to take weights from")
    p.add_argument("--output", type=Path, help="default: <run>/export/model.safetensors")
    p.add_argument(
        "--torch-program", action="store_true", help=f"also write {TORCH_PROGRAM_NAME} for the torch backend"
    )
    p.add_argument(
        "--half",
        action="store_true",
        help="store weight matrices and kernels in float16 (half the size; biases and norm statistics stay float32)",
    )
    return p


def export_program(
    model: torch.nn.Module, spec: InputSpec | FeatureSpec, path: Path, weights: Path | None = None
) -> Path:
    """Save a ``torch.export`` program with a dynamic batch axis; with ``weights`` (the slim safetensors beside it)
    the archive leaves out every weight that file holds byte for byte (``model_store.linked.open_program`` joins
    them back when loading)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model.eval(), (example_input(spec, 2),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    if weights is not None:
        leave_out_weights(path, weights)
    return path


def leave_out_weights(path: Path, weights: Path) -> int:
    """Rewrite the program archive without the weight members equal to a tensor of ``weights``; how many left out."""
    ranges = tensor_ranges(weights)
    with zipfile.ZipFile(path) as archive, open(weights, "rb") as fh:
        members = [(info, archive.read(info)) for info in archive.infolist()]
        drop = set()
        for member, name in program_links(archive).items():
            if name in ranges:
                offset, length, _, _ = ranges[name]
                fh.seek(offset)
                if fh.read(length) == archive.read(member):
                    drop.add(member)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as out:
        for info, data in members:
            if info.filename not in drop:
                out.writestr(info, data)
    tmp.replace(path)
    return len(drop)


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors of rank >= 2 (kernels, weight matrices: nearly all the bytes) in float16; the rest as they are,
    since norm statistics and biases are small and a variance can underflow float16. ValueError where a weight
    does not fit float16's range."""
    out = {}
    for name, value in state.items():
        if value.is_floating_point() and value.ndim >= 2:
            if value.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError(f"{name} holds values beyond float16's range; export it without --half")
            value = value.half()
        out[name] = value
    return out


def save_slim(model: torch.nn.Module, path: Path, metadata: dict[str, str], half: bool = False) -> int:
    """The state_dict alone, as safetensors (``half``: see ``half_state``); returns how many tensors it holds."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(half_state(state) if half else state, path, metadata=metadata)
    return len(state)


def main(args: argparse.Namespace) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = load_config(args.run)
    model = load_weights(build_model(cfg), args.run / args.checkpoint)
    out = args.output or args.run / "export" / SLIM_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"architecture": cfg["architecture"], "labels": ",".join(cfg["labels"])}
    try:
        n = save_slim(model, out, metadata | ({"weights": "float16"} if args.half else {}), args.half)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    log.info("wrote %s (%.2f MB, %d tensors)", out, out.stat().st_size / 1e6, n)
    if args.torch_program and getattr(model, "routes", False):
        # torch.export keeps the exporter's size hint as a runtime check, which a batch of one kind of face fails
        log.warning(
            "no %s: a routed ensemble's torch program cannot run batches without gray or colour faces; "
            "serve it with onnxruntime",
            TORCH_PROGRAM_NAME,
        )
    elif args.torch_program:
        if args.half:  # the program's float32 weights no longer equal the file's bytes, so it keeps its own
            log.warning("%s carries its own float32 weights beside the float16 %s", TORCH_PROGRAM_NAME, out.name)
            model = load_weights(model, out)  # the program runs what the store holds
        program = export_program(model, input_spec(cfg), out.with_name(TORCH_PROGRAM_NAME), out)
        log.info("wrote %s (%.2f MB)", program, program.stat().st_size / 1e6)
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
