"""Rewrite a store entry so its weights are stored once: ``python -m training.relink --model model_store/N/V``.

The ONNX graph and the torch program are exported again from the entry's ``model.safetensors`` with their
initializers and weights read from that file (``model_store.linked``), checked against the entry's current ONNX on
the same random inputs, and the manifest's checksums are updated. For entries published before the store kept one
copy of the weights; ``training.publish`` writes new entries this way already.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_store import FileEntry, read_manifest, sha256_file
from model_store.manifest import MANIFEST_NAME
from training.export_onnx import export, parity
from training.export_slim import export_program
from training.runs import ONNX_NAME, SLIM_NAME, TORCH_PROGRAM_NAME, example_input, load_store_model

log = logging.getLogger("training.relink")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="a store folder, e.g. model_store/fer_emotion_cnn/1.3.0")
    p.add_argument("--tolerance", type=float, default=1e-4)
    return p


def onnx_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    folder, manifest = args.model, read_manifest(args.model)
    if manifest.file("weights") is None or manifest.file("onnx") is None:
        raise SystemExit(f"{manifest.key} needs model.safetensors and model.onnx to be relinked")
    model, _ = load_store_model(folder)
    x = example_input(manifest.input, 5, seed=1)
    before = onnx_outputs(folder / ONNX_NAME, x.numpy())
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        shutil.copyfile(folder / SLIM_NAME, staged / SLIM_NAME)
        export(
            model, example_input(manifest.input, 2), manifest.outputs, staged / ONNX_NAME, weights=staged / SLIM_NAME
        )
        diff = max(
            float(np.abs(a - b).max()) for a, b in zip(before, onnx_outputs(staged / ONNX_NAME, x.numpy()), strict=True)
        )
        torch_diff = parity(model, staged / ONNX_NAME, x)
        if max(diff, torch_diff) > args.tolerance:
            raise SystemExit(f"{manifest.key}: the relinked graph differs by {max(diff, torch_diff):.2e}; left as is")
        written = [ONNX_NAME]
        if manifest.file("torch_program") is not None:
            export_program(model, manifest.input, staged / TORCH_PROGRAM_NAME, staged / SLIM_NAME)
            written.append(TORCH_PROGRAM_NAME)
        for name in written:
            shutil.copyfile(staged / name, folder / name)
    files = [
        FileEntry(path=f.path, role=f.role, sha256=sha256_file(folder / f.path), bytes=(folder / f.path).stat().st_size)
        for f in manifest.files
    ]
    (folder / MANIFEST_NAME).write_text(
        json.dumps(manifest.model_copy(update={"files": files}).model_dump(mode="json"), indent=2) + "\n"
    )
    read_manifest(folder)  # still valid
    sizes = {f.path: f.bytes for f in files}
    log.info("relinked %s: old vs new ONNX max abs diff %.2e; files %s", manifest.key, diff, sizes)
    return {"diff": diff, "bytes": sizes}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
