"""What a model's gate (``model_store.gate``) buys and what it costs in accuracy, at its margin and others.

For each margin (``off``: every face gets the whole ensemble) over the 900 shared photos' largest faces (found and
cut as the service does) and both val sets' faces (RAF-DB val: training's seeded 10% of ``rafdb/train``; FER2013:
its val), all as served (int8, mirror pass for unsure faces):
- the share of faces the gate answers alone;
- labels equal to the whole ensemble's; accuracy, balanced accuracy (mean recall over labels), ECE;
- ms per face for crop + preprocess + model, one face per call as a lone photo request runs it, over the first
  ``--faces`` photos' faces: the fast model, the default without its gate and with it at the shipped margin and
  at each other, interleaved face by face, so the machine's load hits them alike; and each one's ratio to the fast
  model.

The photos are development data (their labels are noisy): the margin is chosen on val and checked on them.
Writes ``gate.json`` and ``gate.png``.

    python -m benchmarks.gate [--model emotion_transfer] [--base fer_emotion_cnn] [--margins 0.9 0.85 0.8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import find_entry, pyplot, save_report, served_predictor, service_settings
from benchmarks.eval_photos import balanced_accuracy, read_photos, service_detector
from model_store import Predictor, to_uint8_face
from service.detection.align import FaceCropper
from service.detection.bars import Picture
from service.options import resolve_options
from service.pipelines.face import FacePipeline
from training.data import load_faces
from training.make_manifest import split_source
from training.reports import classification_metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="emotion_transfer", help="a model whose manifest has a gate")
    p.add_argument("--base", default="fer_emotion_cnn", help="the fast model the cost is compared with")
    p.add_argument("--margins", nargs="+", type=float, default=[0.9, 0.85, 0.8])
    p.add_argument("--faces", type=int, default=300, help="photos' faces timed (every found face is labelled)")
    p.add_argument("--val-limit", type=int, help="faces per val set (default: all)")
    p.add_argument("--output", type=Path, default=Path("runs/gate"))
    return p


Faces = list[tuple[np.ndarray, tuple[int, int, int, int], int]]  # (picture, box of its largest face, label index)


def photo_faces(labels: list[str]) -> Faces:
    """The largest face of every shared photo with a known label, where and as the service finds it."""
    settings = service_settings()
    pipeline, opts = FacePipeline(service_detector(), settings.limits.max_image_pixels), resolve_options(settings)
    found = []
    photos, names = read_photos()
    for image, name in tqdm(list(zip(photos, names, strict=True)), desc="detect", unit="photo"):
        faces = pipeline.find(image, opts) if name in labels else []
        if faces:
            picture = Picture.of(image, opts.find_bars)
            found.append((picture.view, picture.to_view(faces[0].box), labels.index(name)))
    return found


def val_sets(spec, labels: list[str], limit: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model-sized uint8 faces and targets of RAF-DB val and FER2013 val."""
    import csv
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        raf = Path(tmp) / "rafdb.csv"
        with raf.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "split"])
            for s in split_source(DATA / "rafdb", 0.1, 0)["val"]:
                writer.writerow([s.path, s.label, "val"])
        out["rafdb_val"] = load_faces(raf, "val", spec, labels, limit)
    out["fer2013_val"] = load_faces(DATA / "fer2013", "val", spec, labels, limit)
    return {k: (d.images, d.targets) for k, d in out.items()}


def with_margin(predictor: Predictor, margin: float | None) -> Predictor:
    """The same loaded runner served at another gate margin (None: gate off)."""
    manifest = predictor.manifest
    if margin is not None:
        manifest = manifest.model_copy(update={"gate": manifest.gate.model_copy(update={"margin": margin})})
    return Predictor(manifest, predictor.runner, predictor.tta, predictor.tta_margin, gate=margin is not None)


def scores(predictor: Predictor, faces: np.ndarray, targets: np.ndarray, batch: int = 64) -> dict:
    answered: list[tuple[int, int]] = []
    predictor.on_gate = lambda n, k: answered.append((n, k))
    logits = np.concatenate(
        [predictor.infer(predictor.prepare_faces(faces[i : i + batch])).logits for i in range(0, len(faces), batch)]
    )
    labels = predictor.labels
    m = classification_metrics(logits, targets, labels, predictor.manifest.calibration_temperature)
    return {
        "pred": logits.argmax(1),
        "gate_share": sum(k for _, k in answered) / len(faces) if answered else 0.0,
        "accuracy": m["accuracy"],
        "balanced_accuracy": balanced_accuracy(m, min_support=1)[0],  # every label the set has
        "macro_f1": m["macro_f1"],
        "ece": m["ece"],
    }


def label_rows(predictor: Predictor, margins: list[float | None], sets: dict) -> dict:
    rows: dict = {}
    for name, (faces, targets) in sets.items():
        off = None
        for margin in margins:
            r = scores(with_margin(predictor, margin), faces, targets)
            off = r["pred"] if margin is None else off
            r["labels_as_off"] = float(np.mean(r.pop("pred") == off))
            r["faces"] = len(targets)
            rows.setdefault(name, {})["off" if margin is None else f"{margin:g}"] = r
    return rows


def one_face(predictor: Predictor, cropper: FaceCropper, image: np.ndarray, box) -> float:
    started = time.perf_counter()
    predictor.infer(predictor.prepare([cropper.crop(image, box, predictor.manifest.input)]))
    return (time.perf_counter() - started) * 1000


def timing(runs: dict[str, Predictor], faces: Faces, limit: int) -> dict:
    cropper, ms = FaceCropper(), {k: [] for k in runs}
    for image, box, _ in tqdm(faces[:limit], desc="per face", unit="face"):
        for k, predictor in runs.items():
            ms[k].append(one_face(predictor, cropper, image, box))
    base = statistics.fmean(ms[next(iter(runs))])
    return {
        k: {
            "ms_per_face_mean": statistics.fmean(v),
            "ms_per_face_median": statistics.median(v),
            "ratio_to_base": statistics.fmean(v) / base,
        }
        for k, v in ms.items()
    }


def plot(rows: dict, cost: dict, path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    for name, by_margin in rows.items():
        keys, off = list(by_margin), by_margin["off"]
        left.plot(keys, [r["gate_share"] for r in by_margin.values()], marker="o", label=f"{name}: gate answers")
        left.plot(keys, [r["labels_as_off"] for r in by_margin.values()], ls="--", label=f"{name}: labels as off")
        for metric, style in (("accuracy", "-"), ("balanced_accuracy", ":")):
            change = [100 * (r[metric] - off[metric]) for r in by_margin.values()]
            middle.plot(keys, change, ls=style, marker="o", label=f"{name}: {metric.replace('_', ' ')}")
    left.set_ylim(0, 1.02)
    left.set_xlabel("gate margin")
    left.set_title("share of faces the gate answers; labels as without it", fontsize=9)
    left.legend(fontsize=7)
    middle.axhline(0, color="gray", lw=0.8)
    middle.set_xlabel("gate margin")
    middle.set_ylabel("points against the gate off")
    middle.set_title("accuracy and balanced accuracy: what the gate costs", fontsize=9)
    middle.legend(fontsize=7)
    names = [k.split(" ", 1)[1] if " gate " in k else k for k in cost]  # the gated model's runs by their margin
    right.bar(names, [c["ms_per_face_mean"] for c in cost.values()], color="#4a7fb0")
    for i, c in enumerate(cost.values()):
        right.text(i, c["ms_per_face_mean"], f"x{c['ratio_to_base']:.2f}", ha="center", va="bottom", fontsize=8)
    right.tick_params(axis="x", labelsize=7)
    right.set_ylabel("ms per face, mean")
    right.set_title("crop + preprocess + model, one face a call (photos)", fontsize=9)
    fig.suptitle("The gate: faces its member is sure of, answered by it alone")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    settings = service_settings()
    model = served_predictor(find_entry(args.model), settings.model_copy(update={"gate": True}))
    if model.gate_margin is None:
        raise SystemExit(f"{args.model} serves no gate here (none in its manifest, torch, or the onnx package absent)")
    base = served_predictor(find_entry(args.base), settings)
    for predictor in (model, base):
        predictor.warmup()
    labels, spec = model.labels, model.manifest.input
    photos = photo_faces(labels)
    cropper = FaceCropper()
    crops = np.stack([to_uint8_face(cropper.crop(i, b, spec), spec) for i, b, _ in photos])
    sets = {"photos": (crops, np.array([t for *_, t in photos])), **val_sets(spec, labels, args.val_limit)}
    margins = [None, *args.margins]
    rows = label_rows(model, margins, sets)
    shipped = model.gate_margin
    runs = {args.base: base, f"{args.model} gate off": with_margin(model, None)}
    for margin in sorted({shipped, *args.margins}, reverse=True):  # the shipped margin, and what each other costs
        runs[f"{args.model} gate {margin:g}"] = with_margin(model, margin)
    cost = timing(runs, photos, args.faces)
    print(f"backend {settings.backend}; {len(photos)} photos' faces, {min(args.faces, len(photos))} timed")
    for name, by_margin in rows.items():
        for margin, r in by_margin.items():
            print(
                f"{name:12s} {margin:>4s}: gate answers {r['gate_share']:6.1%}  labels as off {r['labels_as_off']:.4f}"
                f"  accuracy {r['accuracy']:.4f}  balanced {r['balanced_accuracy']:.4f}  ECE {r['ece']:.4f}"
            )
    for name, c in cost.items():
        mean, median, ratio = c["ms_per_face_mean"], c["ms_per_face_median"], c["ratio_to_base"]
        print(f"{name:32s} {mean:.2f} ms mean ({median:.2f} median) x{ratio:.2f}")
    out = {"model": args.model, "shipped_margin": shipped, "backend": settings.backend, "labels": rows, "cost": cost}
    save_report(args.output, "gate", out, lambda path: plot(rows, cost, path))
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
