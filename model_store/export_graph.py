"""A store entry's ONNX graph as one self-contained file, for a runtime elsewhere (Triton, another onnxruntime):
``python -m model_store.export_graph NAME VERSION OUT.onnx [--int8] [--store ROOT]``.

The fp32 ``model.onnx`` of an entry reads its weights from ``model.safetensors`` and, for an ensemble member that
is another entry, from that entry's file (``model_store.linked``), so it does not load on its own. This writes a
copy with every weight embedded (checked against the manifest's sha256 first), runs it once beside the entry as
the service runs it and prints the largest difference. ``--int8`` copies ``model.int8.onnx``, which is
self-contained already. The graph takes the preprocessed input the manifest's ``input`` describes; calibration
(``calibration_temperature``), mirror averaging and the labels stay on the caller's side. Needs the ``onnx``
package (``pip install onnx``, part of the ``train`` extra).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from model_store.linked import entry_graph
from model_store.runtime import create_runner
from model_store.store import DEFAULT_ROOT, StoreEntry, StoreError, find, verify_file


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("output", type=Path, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="the int8 graph (model.int8.onnx) instead of the fp32 one")
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    return p


def export_graph(entry: StoreEntry, output: Path, int8: bool = False) -> float:
    """Write the entry's graph self-contained to ``output``; the largest output difference against the entry's own
    runner on a few rows."""
    import onnxruntime as ort

    output.parent.mkdir(parents=True, exist_ok=True)
    if int8:
        shutil.copyfile(verify_file(entry, "onnx_int8"), output)
    else:
        try:
            import onnx
        except ImportError:
            raise SystemExit("writing a self-contained fp32 graph needs the onnx package: pip install onnx") from None
        onnx.save(entry_graph(entry), str(output))
    x = np.random.default_rng(0).standard_normal((3, *entry.manifest.input.tensor_shape)).astype(np.float32)
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    got = session.run(entry.manifest.outputs, {session.get_inputs()[0].name: x})
    expected = create_runner(entry, "onnx-int8" if int8 else "onnx", gate=False)(x)
    return max(float(np.abs(g - expected[name]).max()) for name, g in zip(entry.manifest.outputs, got, strict=True))


def main(args: argparse.Namespace) -> Path:
    try:
        entry = find(args.name, args.version, args.store)
        if args.int8 and entry.manifest.file("onnx_int8") is None:
            raise SystemExit(f"{entry.manifest.key} has no int8 graph")
        diff = export_graph(entry, args.output, args.int8)
    except (StoreError, ValueError) as exc:
        raise SystemExit(str(exc)) from None
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB, self-contained); against the store entry: max abs diff {diff:.1e}")
    shape, outputs = list(entry.manifest.input.tensor_shape), entry.manifest.outputs
    print(f"input: float32 [batch, {', '.join(map(str, shape))}] as the manifest's input describes; outputs {outputs}")
    return args.output


if __name__ == "__main__":
    main(get_args_parser().parse_args())
