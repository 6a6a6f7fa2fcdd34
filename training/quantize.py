"""An int8 copy of a store entry's ONNX graph, next to the fp32 one: ``python -m training.quantize --model
model_store/NAME/VERSION --data runs/mix1/manifest.csv``.

onnxruntime's static quantisation (QDQ: int8 weights per output channel, uint8 activations) calibrated on training
faces preprocessed as the service does (mirrored copies included, since the service averages each face with its
mirror image). The graph is written self-contained as ``model.int8.onnx`` with the file role ``onnx_int8``; the
service runs it with ``EMOTION_BACKEND=onnx-int8`` (entries without one keep their fp32 graph). Written into the
manifest's ``metrics.int8``: how it was calibrated and how far it is from fp32 on held-out faces (top-1 agreement,
largest probability difference). Accuracy beside fp32 comes from ``benchmarks.compare_models``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model_store import StoreEntry, create_runner, prepare_batch
from model_store.int8 import as_served, narrowed
from model_store.linked import entry_graph
from model_store.manifest import MANIFEST_NAME, FileEntry
from model_store.store import read_manifest, sha256_file
from training.data import load_faces
from training.reports import softmax

log = logging.getLogger(__name__)
INT8_NAME = "model.int8.onnx"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a store folder, e.g. model_store/fer_emotion_cnn/1.3.0")
    p.add_argument("--data", type=Path, required=True, help="faces to calibrate on (any training format)")
    p.add_argument("--split", default="train", help="calibration split of --data")
    p.add_argument("--check-split", default="val", help="held-out split of --data the int8 graph is compared on")
    p.add_argument("--samples", type=int, default=512, help="calibration faces (each also mirrored)")
    p.add_argument("--check-samples", type=int, default=1000)
    p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="percentile")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    p.add_argument(
        "--reduce-range",
        action="store_true",
        help="7-bit weights in the file (the service narrows 8-bit ones at load on CPUs without VNNI anyway)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    return p


def model_inputs(folder: Path, data: Path, split: str, samples: int, seed: int) -> np.ndarray:
    """``samples`` faces of ``data``'s ``split`` as the model reads them, each followed by its mirror image."""
    spec = read_manifest(folder).input
    faces = load_faces(data, split, spec, limit=samples, seed=seed).images
    x = prepare_batch(faces, spec, hflip_tta=True)
    n = len(faces)  # interleave each face with its mirror so every calibration batch holds both
    return np.stack([x[:n], x[n:]], axis=1).reshape(2 * n, *x.shape[1:])


class Batches:
    """onnxruntime's ``CalibrationDataReader``: ``get_next`` gives ``{input: batch}`` until the rows run out.

    Batches are all one size (the histogram calibrators stack them); a remainder smaller than that is left out."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int) -> None:
        size = min(batch_size, len(x))
        chunks = [x[i : i + size] for i in range(0, len(x) - size + 1, size)]
        self.chunks = iter(tqdm(chunks, desc="calibrate"))
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self.chunks, None)
        return None if chunk is None else {self.input_name: chunk}

    def rewind(self) -> None:
        raise NotImplementedError("one pass is enough for these calibration methods")


def quantize(folder: Path, x: np.ndarray, out: Path, args: argparse.Namespace) -> None:
    """Static QDQ quantisation of ``folder/model.onnx`` calibrated on ``x`` into a self-contained ``out``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole.onnx"  # the graph's weights pulled in from model.safetensors and any linked file
        onnx.save(entry_graph(StoreEntry(read_manifest(folder), folder)), str(whole))
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(whole), str(prepared), skip_symbolic_shape=True)  # it trips on value_* Constants
        quantize_static(
            str(prepared),
            str(out),
            Batches(x, "input", args.batch_size),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=not args.per_tensor,
            reduce_range=args.reduce_range,
            calibrate_method=methods[args.method],
            extra_options={"CalibPercentile": 99.99} if args.method == "percentile" else {},
        )


def compare(fp32: StoreEntry, int8: Path, x: np.ndarray, temperature: float) -> dict:
    """Top-1 agreement and the largest calibrated-probability difference between the entry's fp32 graph (as the
    service runs it, linked weights included) and the int8 one on ``x``, as the service runs it on this CPU (weights
    in 7 bits where its int8 products saturate: ``model_store.int8``)."""
    import onnxruntime as ort

    def probs(run) -> np.ndarray:
        logits = np.concatenate([run(x[i : i + 256]) for i in range(0, len(x), 256)])
        return softmax(logits / temperature)

    session = ort.InferenceSession(as_served(int8.read_bytes()), providers=["CPUExecutionProvider"])
    runner = create_runner(fp32, "onnx", gate=False)
    a = probs(lambda rows: runner(rows)[fp32.manifest.outputs[0]])
    b = probs(lambda rows: session.run(None, {"input": rows})[0])
    return {
        "rows": len(x),  # faces and their mirror images
        "weight_bits": 7 if narrowed() else 8,
        "top1_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 4),
        "max_probability_difference": round(float(np.abs(a - b).max()), 4),
        "mean_probability_difference": round(float(np.abs(a - b).mean()), 5),
    }


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    folder = args.model
    manifest = read_manifest(folder)
    if manifest.file("onnx") is None:
        raise SystemExit(f"{manifest.key} has no ONNX graph to quantise")
    if manifest.routed and args.method != "minmax":
        # a routed member sees a different number of rows per calibration batch, which only min/max can pool
        raise SystemExit(f"{manifest.key} routes members to gray or colour faces: calibrate it with --method minmax")
    calibration = model_inputs(folder, args.data, args.split, args.samples, args.seed)
    staged = folder / f".{INT8_NAME}.tmp"  # the entry keeps its old graph and manifest until both are ready
    quantize(folder, calibration, staged, args)
    check = model_inputs(folder, args.data, args.check_split, args.check_samples, args.seed)
    agreement = compare(StoreEntry(manifest, folder), staged, check, manifest.calibration_temperature)
    int8 = {
        "calibration": {
            "data": str(args.data),
            "split": args.split,
            "faces": args.samples,
            "method": args.method,
            "per_channel": not args.per_tensor,
            "reduce_range": args.reduce_range,
        },
        f"against_fp32_on_{args.check_split}": agreement,
    }
    entry = FileEntry(path=INT8_NAME, role="onnx_int8", sha256=sha256_file(staged), bytes=staged.stat().st_size)
    files = [f for f in manifest.files if f.role != "onnx_int8"] + [entry]
    updated = manifest.model_copy(update={"files": files, "metrics": {**manifest.metrics, "int8": int8}})
    new_manifest = folder / f".{MANIFEST_NAME}.tmp"
    new_manifest.write_text(json.dumps(updated.model_dump(mode="json"), indent=2) + "\n")
    os.replace(staged, folder / INT8_NAME)
    os.replace(new_manifest, folder / MANIFEST_NAME)
    read_manifest(folder)  # still valid
    log.info("%s: %s (%d bytes); against fp32: %s", manifest.key, INT8_NAME, entry.bytes, agreement)
    return int8


if __name__ == "__main__":
    main(get_args_parser().parse_args())
