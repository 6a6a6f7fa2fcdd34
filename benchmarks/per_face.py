"""Per-face cost (crop + preprocess, then model: onnxruntime and postprocessing) of this tree against another checkout,
call by call in one process, so that a shared machine's load hits both alike.

The other checkout (``--base``: a folder holding an older ``model_store/preprocess.py``, e.g. ``git archive REV``)
gives its preprocessing; its model runs as one graph (a routed ensemble unsplit, as before route graphs). Faces: the
one face of ``benchmarks.stages``' 640x480 photo (colour, cropped as the service crops) and a FER2013 crop (gray).
Prints the median of ``--pairs`` alternating calls per round, ``--rounds`` rounds.

    python -m benchmarks.per_face --base /tmp/perf_base [--model fer_emotion_cnn emotion_transfer] [--pairs 150]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from benchmarks import find_entry, served_predictor, service_settings
from benchmarks.stages import sample_inputs
from model_store import Predictor, Prepared, runtime
from service.detection import create_detector
from service.detection.align import FaceCropper
from service.imaging import decode_image
from service.options import resolve_options
from service.pipelines.face import FacePipeline


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    p.add_argument("--model", nargs="+", default=["fer_emotion_cnn", "emotion_transfer"])
    p.add_argument("--pairs", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    return p


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(model: str, routed: bool) -> Predictor:
    """The model as the service loads it; ``routed=False`` keeps a routed ensemble as its one graph."""
    settings, original = service_settings(), runtime.routed_graphs
    if not routed:
        runtime.routed_graphs = lambda path: None
    try:
        predictor = served_predictor(find_entry(model), settings)
    finally:
        runtime.routed_graphs = original
    predictor.warmup()
    return predictor


def one_face(predictor: Predictor, pre: ModuleType, crop) -> tuple[float, float]:
    """ms for crop + preprocess, and for the model with postprocessing, of one face."""
    spec = predictor.manifest.input
    t0 = time.perf_counter()
    x = pre.prepare_batch(np.stack([pre.to_uint8_face(crop(spec), spec)]), spec, predictor.paired)
    t1 = time.perf_counter()
    predictor.postprocess(predictor.run(x), Prepared(x, 1, predictor.paired))
    return (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000


def main(args: argparse.Namespace) -> None:
    base_pre = load_module(args.base / "model_store" / "preprocess.py", "base_preprocess")
    this_pre = importlib.import_module("model_store.preprocess")
    face_bytes, photo = sample_inputs()
    settings = service_settings()
    image = decode_image(photo, settings.limits.max_image_pixels)
    pipeline = FacePipeline(create_detector(settings.detector), settings.limits.max_image_pixels)
    box, cropper = pipeline.find(image, resolve_options(settings))[0].box, FaceCropper()
    gray = decode_image(face_bytes, settings.limits.max_image_pixels)
    faces = {"photo face (colour)": lambda spec: cropper.crop(image, box, spec), "FER2013 crop (gray)": lambda _: gray}
    print(f"backend {settings.backend}, inference threads {settings.inference_threads or 'default'}")
    for model in args.model:
        variants = {"base": (load(model, False), base_pre), "this": (load(model, True), this_pre)}
        for face, crop in faces.items():
            for r in range(args.rounds):
                times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
                for _ in range(args.pairs):
                    for k, (predictor, pre) in variants.items():
                        times[k].append(one_face(predictor, pre, crop))
                parts = []
                for k, t in times.items():
                    pre_ms, model_ms = (statistics.median(x) for x in zip(*t, strict=True))
                    parts.append(f"{k}: pre {pre_ms:.2f} model {model_ms:.2f} sum {statistics.median(map(sum, t)):.2f}")
                print(f"{model:17s} {face:20s} round {r}: " + "  ".join(parts), flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
