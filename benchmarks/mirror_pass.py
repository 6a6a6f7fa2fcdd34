"""What the mirror pass costs per face, and what serving it only to unsure faces (``tta_margin``) saves.

Mirror TTA averages a face with its mirror image. With ``tta_margin`` below 1 the service runs the mirror pass only
for the faces whose calibrated top-two margin is under it (``Predictor.run``). This script measures, for each model
and each margin, over the largest face of the shared photos as the service finds and cuts it:

- the share of faces that needed the second pass;
- labels equal to full TTA's (margin 1);
- ms per face for crop + preprocess + model, one face per call as a lone photo request runs it, all models and
  margins interleaved face by face so that the machine's load hits them alike; and the ratio of each model's cost to
  the first model's (the fast one) at the same margin and at full TTA.

Accuracy on the val sets is ``training.evaluate --tta-margin``; the photos' is ``benchmarks.eval_photos`` with
``EMOTION_TTA_MARGIN``. Writes ``mirror_pass.json`` and ``mirror_pass.png``.

    python -m benchmarks.mirror_pass [--model fer_emotion_cnn emotion_transfer] [--margins 1 0.4 0.2] [--faces 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import find_entry, pyplot, save_report, served_predictor, service_settings
from benchmarks.eval_photos import read_photos, service_detector
from model_store import Predictor
from service.detection.align import FaceCropper
from service.detection.bars import Picture
from service.options import resolve_options
from service.pipelines.face import FacePipeline


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["fer_emotion_cnn", "emotion_transfer"], help="the first is the base")
    p.add_argument("--margins", nargs="+", type=float, default=[1.0, 0.4, 0.2], help="the first is full TTA")
    p.add_argument("--photos", type=int, help="the first N photos only (default: all 900)")
    p.add_argument("--faces", type=int, default=300, help="photos' faces timed (every found face is labelled)")
    p.add_argument("--output", type=Path, default=Path("runs/mirror_pass"))
    return p


Box = tuple[int, int, int, int]
Faces = list[tuple[np.ndarray, Box]]  # (photo, the box of its largest face)


def photo_faces(limit: int | None = None) -> Faces:
    """The largest face of every shared photo (the first ``limit``) in which the service finds one: (photo, box)."""
    settings = service_settings()
    pipeline = FacePipeline(service_detector(), settings.limits.max_image_pixels)
    opts, found = resolve_options(settings), []
    for image in tqdm(read_photos()[0][:limit], desc="detect", unit="photo"):
        faces = pipeline.find(image, opts)
        if faces:  # the face as the service cuts it: inside the photo's flat bars
            picture = Picture.of(image, opts.find_bars)
            found.append((picture.view, picture.to_view(faces[0].box)))
    return found


def load(model: str, margin: float, mirrored: list[int]) -> Predictor:
    """The model as served at ``margin``; each second pass's face count goes into ``mirrored``."""
    settings = service_settings().model_copy(update={"tta_margin": margin})
    predictor = served_predictor(find_entry(model), settings)
    predictor.warmup()
    predictor.on_mirror_pass = mirrored.append  # after the warm-up's zeros, which are not faces
    return predictor


def one_face(predictor: Predictor, cropper: FaceCropper, image: np.ndarray, box: Box) -> tuple[float, str]:
    """ms for crop + preprocess + model (with postprocessing) of one face, and its label."""
    started = time.perf_counter()
    preds = predictor.infer(predictor.prepare([cropper.crop(image, box, predictor.manifest.input)]))
    return (time.perf_counter() - started) * 1000, preds.dominant[0]


def measure(args: argparse.Namespace, faces: Faces) -> dict:
    cropper = FaceCropper()
    mirrored: dict = {(m, t): [] for m in args.model for t in args.margins}  # the predictor's own count
    runs = {k: load(*k, mirrored[k]) for k in mirrored}
    ms: dict = {k: [] for k in runs}
    labels: dict = {k: [] for k in runs}
    for i, (image, box) in enumerate(tqdm(faces, desc="per face", unit="face")):
        for k, predictor in runs.items():
            took, label = one_face(predictor, cropper, image, box)
            labels[k].append(label)
            if i < args.faces:
                ms[k].append(took)
    out: dict = {}
    full_tta = args.margins[0]
    for model in args.model:
        full = labels[(model, args.margins[0])]
        for t in args.margins:
            k, base = (model, t), (args.model[0], t)
            out[f"{model} {t:g}"] = {
                "model": model,
                "tta_margin": t,
                "second_pass_share": sum(mirrored[k]) / len(faces) if t < 1 else 1.0,
                "labels_as_full_tta": float(np.mean(np.array(labels[k]) == np.array(full))),
                "ms_per_face_median": statistics.median(ms[k]),
                "ms_per_face_mean": statistics.fmean(ms[k]),
                "ratio_to_base_same_margin": statistics.fmean(ms[k]) / statistics.fmean(ms[base]),
                "ratio_to_base_full_tta": statistics.fmean(ms[k]) / statistics.fmean(ms[(args.model[0], full_tta)]),
            }
    return out


def plot(rows: dict, path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(rows)
    ax.bar(names, [r["ms_per_face_mean"] for r in rows.values()], color="#4a7fb0")
    for i, r in enumerate(rows.values()):
        ax.text(i, r["ms_per_face_mean"], f"{r['second_pass_share']:.0%}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("ms per face (crop + preprocess + model), mean")
    ax.set_title("Mirror pass for unsure faces only (tta_margin; above each bar: faces mirrored)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    faces = photo_faces(args.photos)
    rows = measure(args, faces)
    timed, backend = min(args.faces, len(faces)), service_settings().backend
    print(f"{len(faces)} photos' faces labelled, {timed} timed; backend {backend}")
    for name, r in rows.items():
        print(
            f"{name:22s} mirrored {r['second_pass_share']:6.1%}  labels as full TTA {r['labels_as_full_tta']:.4f}  "
            f"{r['ms_per_face_mean']:.2f} ms mean ({r['ms_per_face_median']:.2f} median)  "
            f"x{r['ratio_to_base_same_margin']:.2f} base same margin, x{r['ratio_to_base_full_tta']:.2f} base full TTA"
        )
    save_report(args.output, "mirror_pass", rows, lambda path: plot(rows, path))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
