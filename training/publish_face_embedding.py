"""Publish dlib's face-recognition network as the store's face-embedding component: ``python -m
training.publish_face_embedding [--store DIR] [--version V] [--photos DIR]``.

dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (Davis King, public domain/CC0, 99.38% on LFW as its author
reports), read from the installed ``face-recognition-models`` into the torch port (``training.models.dlib_resnet``,
descriptor layer kept), exported by ``training.export_onnx`` (self-contained, 128-d output ``descriptor``) and
quantised by ``training.quantize`` (calibrated on dlib's aligned chips of real photos). Both graphs are checked
against dlib's own ``compute_face_descriptor`` on dlib's chips of the photos; the figures go into the manifest.
The service runs it in-process only (``service.identity``): a descriptor never leaves the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from model_store import DEFAULT_ROOT
from model_store.int8 import as_served
from model_store.manifest import MANIFEST_NAME, FileEntry, Manifest
from model_store.packaged import packaged_model
from model_store.store import read_manifest, sha256_file
from training import export_onnx, quantize
from training.models.dlib_resnet import DLIB_FILE, DLIB_MEAN_RGB, DlibFaceResNet, load_dlib_weights

log = logging.getLogger("training.publish_face_embedding")
NAME = "dlib_face_descriptor"
CHIP, PADDING = 150, 0.25  # dlib's compute_face_descriptor: a 150x150 chip padded by 0.25
LICENSE_TEXT = """dlib_face_recognition_resnet_model_v1.dat: dlib's face-recognition ResNet, trained by Davis E. King
(dlib, http://dlib.net; https://github.com/davisking/dlib-models). The model file is released into the public
domain under Creative Commons CC0 1.0 Universal (https://creativecommons.org/publicdomain/zero/1.0/), as stated by
its author and by the face_recognition_models 0.3.0 package (Adam Geitgey) it was read from.

model.onnx and model.int8.onnx in this folder are that network's weights converted to ONNX (and quantised to int8)
by this project (training/publish_face_embedding.py); they carry the same CC0 dedication.

The network was trained by its author on about 3 million faces (the FaceScrub and VGG datasets and images scraped by
him); read dlib-models' README for what that data was. It computes a 128-d descriptor of a face used here only to
tell whether two tracks of one video show the same person; see the project's responsible-use notes.
"""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/photos/images")
    p.add_argument("--calibration", type=int, default=256, help="photos whose chips calibrate the int8 graph")
    p.add_argument("--check", type=int, default=200, help="further photos the graphs are checked on against dlib")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--keep-float",
        action="store_true",
        help="keep the float graph (model.onnx, 22.7 MB) in the entry; by default it is built, checked and quantised, "
        "then left out: the service runs the int8 graph, and the float one rebuilds from the package "
        "(its descriptors within 1e-4 of dlib's; its bytes can differ by platform, as the exporter folds constants)",
    )
    return p


def spec() -> dict:
    """The input spec: a 150x150 RGB chip, ``(x - mean_rgb) / 256`` as dlib feeds it (x on 0-255)."""
    return {
        "height": CHIP,
        "width": CHIP,
        "channels": 3,
        "mean": [round(m / 255.0, 6) for m in DLIB_MEAN_RGB],
        "std": [256.0 / 255.0] * 3,
        "face_margin": PADDING,
        "framing": "chip",
    }


def dlib_chips(photos: list[Path]) -> tuple[np.ndarray, list[Path]]:
    """dlib's aligned 150x150 RGB chips (HOG detector, 5-point predictor, ``get_face_chip``) of the largest face of
    each photo that has one, and those photos."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    points = dlib.shape_predictor(str(packaged_model("shape_predictor_5_face_landmarks.dat", "publishing")))
    chips, used = [], []
    for path in photos:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        faces = sorted(detector(rgb, 1), key=lambda r: r.area(), reverse=True)
        if faces:
            chips.append(np.asarray(dlib.get_face_chip(rgb, points(rgb, faces[0]), CHIP, PADDING)))
            used.append(path)
    return np.stack(chips), used


def model_input(chips: np.ndarray) -> np.ndarray:
    """Chips (N x 150 x 150 x 3 RGB uint8) as the graph reads them."""
    return ((chips.astype(np.float32) - np.array(DLIB_MEAN_RGB, np.float32)) / 256.0).transpose(0, 3, 1, 2).copy()


def against_dlib(graph: Path, chips: np.ndarray, names: list[str]) -> dict:
    """The graph's descriptors against dlib's ``compute_face_descriptor`` on the same chips: largest absolute
    difference, distance between the two descriptors of a chip, and whether every pair of chips falls on the same
    side of dlib's customary 0.6 either way."""
    import dlib
    import onnxruntime as ort

    recogniser = dlib.face_recognition_model_v1(str(packaged_model(DLIB_FILE, "publishing")))
    ref = np.array([np.asarray(recogniser.compute_face_descriptor(c)) for c in chips], np.float32)
    data = graph.read_bytes()
    data = as_served(data) if graph.name == quantize.INT8_NAME else data  # as this CPU serves it (model_store.int8)
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": model_input(chips)})[0]
    own = np.linalg.norm(ref - got, axis=1)
    iu = np.triu_indices(len(chips), 1)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=2)[iu]
    d_got = np.linalg.norm(got[:, None] - got[None], axis=2)[iu]
    people = np.array([n.rsplit("_", 1)[0] for n in names])
    same = (people[:, None] == people[None])[iu]
    return {
        "faces": len(chips),
        "max_abs_diff": float(f"{np.abs(ref - got).max():.3g}"),
        "distance_to_dlib_mean": float(f"{own.mean():.3g}"),
        "distance_to_dlib_max": float(f"{own.max():.3g}"),
        "pairs": len(d_ref),
        "same_person_pairs": int(same.sum()),
        "pair_distance_max_diff": float(f"{np.abs(d_ref - d_got).max():.3g}"),
        "pairs_same_side_of_0.6": round(float(((d_ref < 0.6) == (d_got < 0.6)).mean()), 6),
    }


def write_manifest(folder: Path, version: str, files: list[FileEntry], metrics: dict) -> Manifest:
    manifest = Manifest(
        name=NAME,
        version=version,
        task="face-embedding",
        architecture="dlib_resnet",
        architecture_args={"descriptor": True},
        labels=["descriptor"],
        input=spec(),
        outputs=["descriptor"],
        mirror_tta=False,
        files=files,
        metrics=metrics,
        dataset={
            "name": "dlib's face-recognition training set (about 3 million faces: FaceScrub, VGG and images its "
            "author gathered)",
            "terms": "the weights are public domain (CC0); read dlib-models' README about the training images",
        },
        training={
            "source": f"dlib {DLIB_FILE} (davisking/dlib-models) from the face_recognition_models 0.3.0 package, "
            "read by training.models.dlib_resnet and exported by training/publish_face_embedding.py",
            "source_sha256": sha256_file(packaged_model(DLIB_FILE, "publishing")),
            "reported_by_source": "LFW 99.38% (Davis King, dlib's face recognition example)",
        },
        description="dlib's face-recognition ResNet: a 128-d descriptor of a 150x150 five-point aligned RGB face chip "
        "(dlib's get_face_chip geometry, padding 0.25), input (rgb - mean_rgb) / 256. A component: the video pipeline "
        "links a clip's tracks into persons with it, inside the process (service.identity); no descriptor is ever "
        "returned, stored or logged.",
        license="CC0-1.0. dlib face-recognition model by Davis E. King (public domain); see LICENSE beside this "
        "manifest.",
    )
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return read_manifest(folder)


def main(args: argparse.Namespace) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    folder = args.store / NAME / args.version
    if folder.exists():
        if not args.overwrite:
            raise SystemExit(f"{folder} exists; pass --overwrite to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model = load_dlib_weights(DlibFaceResNet(descriptor=True)).eval()
    graph = export_onnx.export(model, torch.zeros(2, 3, CHIP, CHIP), ["descriptor"], folder / "model.onnx")
    photos = sorted(args.photos.glob("*.jpg"))
    chips, used = dlib_chips(photos[: args.calibration + args.check])
    calib, check = chips[: args.calibration], chips[args.calibration :]
    check_names = [p.stem for p in used[args.calibration :]]
    torch_diff = export_onnx.parity(model, graph, torch.from_numpy(model_input(check[:8])))
    files = [FileEntry(path="model.onnx", role="onnx", sha256=sha256_file(graph), bytes=graph.stat().st_size)]
    write_manifest(folder, args.version, files, {})
    (folder / "LICENSE").write_text(LICENSE_TEXT)
    x = model_input(np.concatenate([calib, calib[:, :, ::-1]]))  # mirrored copies too: faces turn both ways
    q = argparse.Namespace(batch_size=32, per_tensor=False, reduce_range=False, method="percentile")
    int8 = folder / quantize.INT8_NAME
    quantize.quantize(folder, x, int8, q)
    files.append(FileEntry(path=int8.name, role="onnx_int8", sha256=sha256_file(int8), bytes=int8.stat().st_size))
    metrics = {
        "against_dlib": {
            "data": f"dlib's chips of {len(check)} shared development photos not used for calibration",
            "onnx": against_dlib(graph, check, check_names),
            "onnx_int8": against_dlib(int8, check, check_names),
        },
        "torch_vs_onnx_max_abs_diff": float(f"{torch_diff:.3g}"),
        "int8_calibration": {"chips": len(calib), "mirrored": True, "method": "percentile", "per_channel": True},
    }
    log.info(
        "torch vs onnx max abs diff %.2e; against dlib: %s", torch_diff, json.dumps(metrics["against_dlib"], indent=1)
    )
    if not args.keep_float:
        float_graph = files.pop(0)
        metrics["float_graph"] = {
            "sha256": float_graph.sha256,
            "bytes": float_graph.bytes,
            "note": "built, checked against dlib and quantised, then left out of the entry; "
            "python -m training.publish_face_embedding --keep-float rebuilds it: descriptors within 1e-4 of dlib's; "
            "sha256 and size are the publishing machine's (the exporter folds constants per platform: within 0.1%)",
        }
        graph.unlink()
    write_manifest(folder, args.version, files, metrics)
    return folder


if __name__ == "__main__":
    main(get_args_parser().parse_args())
