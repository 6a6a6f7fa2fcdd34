"""Compare published face classifiers, and averages of them, on the same faces: the selection table behind a new
default version.

Each entry (a store folder) runs once per set through ``model_store.Predictor`` (onnxruntime, mirror TTA), the code
path the service serves, on faces prepared as its manifest says (size, channels, and for photos the framing); an
average ("combo") is then the mean of its members' calibrated probabilities, which is what ``training.ensemble``
would ship as one graph (for members of one input), so a combination can be judged before it is built. Sets: the
``val`` split of each ``--set NAME=SOURCE`` (any face dataset ``training.evaluate`` reads) and, unless
``--no-photos``, the largest face of each shared photo as ``/predict/image`` finds it (balanced accuracy over the
labels with at least ``--min-support`` photos). Writes ``compare.json`` and ``compare.png``. ``--grid STEP`` also
scores every weighting of the candidates in steps of STEP (``grid.json``, ranked by the mean accuracy over the
``--set`` val sets, as a default's members are weighted): the search behind ``training.ensemble --weight``.

    python -m benchmarks.compare_models --entry model_store/fer_emotion_cnn/1.3.0 --entry runs/store/b/1.0.0 \\
        --set fer2013=../shared/data/fer2013 --set rafdb=runs/mix/rafdb.csv --combo 0+1 --output runs/compare
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from benchmarks.eval_photos import (
    balanced_accuracy,
    inside_bars,
    largest_face_crops,
    read_photos,
    service_detector,
    service_fallbacks,
)
from model_store import InputSpec, Predictor, read_manifest, to_uint8_face
from model_store.manifest import TASKS
from model_store.store import StoreEntry
from training.data import load_faces
from training.reports import classification_metrics, softmax


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entry", type=Path, action="append", required=True, help="a store folder; repeat")
    p.add_argument("--set", action="append", default=[], metavar="NAME=SOURCE", help="a face dataset; repeat")
    p.add_argument("--split", default="val")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="I:KEY=VALUE[,KEY=VALUE]",
        help="entry I again with its input spec changed (e.g. 0:framing=chip,face_margin=0.1: one model, another "
        "framing; 0:tta=false: without the mirror-image average; 0:backend=onnx-int8: its int8 graph); "
        "variants are numbered after the entries, for "
        "--combo too",
    )
    p.add_argument("--combo", action="append", default=[], help="entry indices joined by '+', e.g. 0+1+2; repeat")
    p.add_argument("--no-photos", action="store_true")
    p.add_argument("--detector", help="detector backend for the photos (default: the service's)")
    p.add_argument("--photo-limit", type=int, help="only the first N photos (for quick checks)")
    p.add_argument("--min-support", type=int, default=100)
    p.add_argument("--grid", type=float, help="also score every weighting of the candidates in steps of this share")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("runs/compare"))
    return p


def mean_calibrated(logits: list[np.ndarray], temperatures: list[float]) -> np.ndarray:
    """Log of the mean of each member's ``softmax(logits / T)``: the ensemble's output, usable as logits."""
    if not logits or len(logits) != len(temperatures):
        raise ValueError("one temperature per member, and at least one member")
    probs = sum(softmax(z, t) for z, t in zip(logits, temperatures, strict=True)) / len(logits)
    return np.log(np.clip(probs, 1e-8, None))


def parse_combo(text: str, n: int) -> list[int]:
    """``"0+2"`` -> ``[0, 2]``; every index must name an ``--entry``."""
    try:
        members = [int(part) for part in text.split("+")]
    except ValueError:
        raise ValueError(f"--combo {text!r}: write entry indices joined by '+', e.g. 0+1") from None
    if not members or any(not 0 <= i < n for i in members) or len(set(members)) != len(members):
        raise ValueError(f"--combo {text!r}: indices must be distinct and in 0..{n - 1}")
    return members


def open_entries(folders: list[Path]) -> list[StoreEntry]:
    """Store entries that can be compared and averaged: face classifiers over one label list (each reads its own
    input: size, channels, framing)."""
    entries = [StoreEntry(read_manifest(folder), folder) for folder in folders]
    first = entries[0].manifest
    for entry in entries:
        m = entry.manifest
        if TASKS[m.task].input != "face" or TASKS[m.task].multi_label:
            raise ValueError(f"{entry.folder}: a {m.task} model; only face classifiers can be compared here")
        if m.labels != first.labels:
            raise ValueError(f"{entry.folder}: labels differ from {entries[0].folder}; cannot compare")
    return entries


def spec_key(spec: InputSpec) -> str:
    return spec.model_dump_json()


def photo_faces(args) -> tuple[list[np.ndarray], list[str], list]:
    """The shared photos, their labels and the faces ``/predict/image`` finds in each (detected once for all)."""
    photos, labels = read_photos()
    photos = inside_bars(photos)
    photos, labels = photos[: args.photo_limit], labels[: args.photo_limit]
    detector = service_detector(args.detector)
    faces = [detector.detect(image) for image in tqdm(photos, desc="detect", unit="photo", leave=False)]
    return photos, labels, service_fallbacks(photos, faces, {}, detector)


def face_sets(args, specs: list[InputSpec], labels: list[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{spec: {set name: (model-sized faces, targets)}}`` for every ``--set`` and the photos, prepared once per
    distinct input spec (photo faces cut as each model's framing says, like the service)."""
    photos = None if args.no_photos else photo_faces(args)
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for spec in specs:
        if spec_key(spec) in out:
            continue
        sets = out[spec_key(spec)] = {}
        for item in args.set:
            name, sep, source = item.partition("=")
            if not sep or not name or not source:
                raise ValueError(f"--set {item!r}: write NAME=SOURCE")
            data = load_faces(Path(source), args.split or None, spec, labels)
            sets[name] = (data.images, data.targets)
        if photos is not None:
            crops, targets = largest_face_crops(*photos, spec, labels)
            sets["photos"] = (np.stack([to_uint8_face(crop, spec) for crop in crops]), targets)
    return out


def score(logits: np.ndarray, targets: np.ndarray, labels: list[str], temperature: float, min_support: int) -> dict:
    metrics = classification_metrics(logits, targets, labels, temperature)
    metrics["balanced_accuracy"], metrics["balanced_over"] = balanced_accuracy(metrics, min_support)
    return metrics


@dataclass(frozen=True)
class Candidate:
    """One model read one way: a store entry, or a variant of one with another input spec."""

    name: str
    predictor: Predictor
    spec: InputSpec
    temperature: float


def parse_variant(text: str, n: int) -> tuple[int, dict]:
    """``"0:framing=chip,face_margin=0.1"`` -> ``(0, {"framing": "chip", "face_margin": 0.1})``."""
    index, sep, body = text.partition(":")
    if not sep or not index.isdigit() or not 0 <= int(index) < n or "=" not in body:
        raise ValueError(f"--variant {text!r}: write I:KEY=VALUE[,KEY=VALUE] with I in 0..{n - 1}")
    changes = {}
    for pair in body.split(","):
        key, _, value = pair.partition("=")
        changes[key.strip()] = json.loads(value) if value.strip()[:1] in "0123456789-[{" else value.strip()
    return int(index), changes


def candidates(entries: list[StoreEntry], variants: list[str], threads: int) -> list[Candidate]:
    """``[i] name version`` per entry (two stores may hold the same name and version), then each variant, named
    with what it changes; one loaded predictor per entry."""
    predictors = [Predictor.load(entry, threads=threads) for entry in entries]
    out = [
        Candidate(
            f"[{i}] {e.manifest.name} {e.manifest.version}", p, e.manifest.input, e.manifest.calibration_temperature
        )
        for i, (e, p) in enumerate(zip(entries, predictors, strict=True))
    ]
    for text in variants:
        i, changes = parse_variant(text, len(entries))
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        predictor = predictors[i]
        loading = {key: changes.pop(key) for key in ("tta", "backend") if key in changes}
        if loading:  # the same model run another way: without its mirror-image average, or its int8 graph
            tta = str(loading.get("tta", True)).lower() in ("true", "1")
            predictor = Predictor.load(entries[i], loading.get("backend", "onnx"), threads=threads, tta=tta)
        try:
            spec = InputSpec.model_validate({**entries[i].manifest.input.model_dump(), **changes})
        except ValidationError as exc:
            raise ValueError(f"--variant {text!r}: {exc.errors()[0]['msg']}") from None
        out.append(
            Candidate(
                f"[{len(out)}] {out[i].name[len(f'[{i}] ') :]} ({described})", predictor, spec, out[i].temperature
            )
        )
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets, names = list(next(iter(results.values()))), list(results)
    fig, ax = plt.subplots(figsize=(min(16, 2 + 0.3 * len(sets) * len(names)), 4.5))
    width, colours = 0.8 / len(names), plt.get_cmap("tab20").colors
    values = np.array([[results[name][s]["macro_f1"] for s in sets] for name in names])
    for i, name in enumerate(names):
        ax.bar(np.arange(len(sets)) + i * width, values[i], width, label=name, color=colours[i % len(colours)])
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets)
    ax.set_ylim(max(0.0, values.min() - 0.05), min(1.0, values.max() + 0.02))  # the differences are what matter
    ax.set_ylabel("macro-F1")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    if args.no_photos and not args.set:
        raise ValueError("nothing to score: give a --set NAME=SOURCE or leave the photos on")
    entries = open_entries(args.entry)
    members = candidates(entries, args.variant, args.threads)
    combos = [parse_combo(c, len(members)) for c in args.combo]
    if args.grid:
        simplex(len(members), args.grid)  # a bad step is refused before any model runs
    labels = list(entries[0].manifest.labels)
    prepared = face_sets(args, [m.spec for m in members], labels)
    names = [m.name for m in members] + ["mean of " + " ".join(f"[{i}]" for i in combo) for combo in combos]
    results: dict[str, dict] = {name: {} for name in names}
    first = prepared[spec_key(members[0].spec)]
    temps = [m.temperature for m in members]
    outputs: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    for set_name, (_, targets) in first.items():
        logits = [
            m.predictor.predict_faces(prepared[spec_key(m.spec)][set_name][0]).logits
            for m in tqdm(members, desc=set_name, unit="model", leave=False)
        ]
        outputs[set_name] = (logits, targets)
        rows = list(zip(logits, temps, strict=True))
        rows += [(mean_calibrated([logits[i] for i in c], [temps[i] for i in c]), 1.0) for c in combos]
        for name, (z, t) in zip(results, rows, strict=True):
            results[name][set_name] = score(z, targets, labels, t, args.min_support)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "compare.json").write_text(json.dumps(results, indent=2))
    if args.grid:
        grid = weight_grid(outputs, temps, args.grid, args.min_support)
        (args.output / "grid.json").write_text(json.dumps(grid, indent=2))
        for row in grid[:10]:
            print("weights " + " ".join(f"{w:.2f}" for w in row["weights"]) + ": " + grid_cells(row))
    plot(results, args.output / "compare.png")
    for name, by_set in results.items():
        print(f"{name}: " + " | ".join(summary_cells(by_set)))
    return results


def simplex(n: int, step: float) -> list[tuple[float, ...]]:
    """Every ``n`` non-negative shares in multiples of ``step`` that sum to one."""
    units = round(1 / step)
    if not 0 < step <= 0.5 or abs(units * step - 1) > 1e-9:
        raise ValueError(f"--grid {step}: give a step that divides 1, at most 0.5 (e.g. 0.1)")
    return [tuple(k / units for k in c) for c in itertools.product(range(units + 1), repeat=n) if sum(c) == units]


def weighted_scores(probs: np.ndarray, targets: np.ndarray, min_support: int) -> dict:
    """Accuracy and balanced accuracy (over labels with ``min_support`` samples) of ``argmax(probs)``: all a grid
    row needs, fast enough for thousands of rows."""
    pred = probs.argmax(1)
    counted = [k for k in range(probs.shape[1]) if (targets == k).sum() >= min_support]
    recall = [float(((pred == k) & (targets == k)).sum() / (targets == k).sum()) for k in counted]
    return {"accuracy": float((pred == targets).mean()), "balanced_accuracy": float(np.mean(recall))}


def weight_grid(outputs: dict, temperatures: list[float], step: float, min_support: int) -> list[dict]:
    """Each weighting of the candidates' calibrated probabilities scored on every set, best first: mean accuracy
    over the val sets (not the photos, which are development data), then the photos' balanced accuracy."""
    probs = {
        name: ([softmax(z, t) for z, t in zip(logits, temperatures, strict=True)], y)
        for name, (logits, y) in outputs.items()
    }
    rows = []
    for weights in simplex(len(temperatures), step):
        row = {"weights": list(weights)}
        for name, (p, y) in probs.items():
            mixed = sum(w * q for w, q in zip(weights, p, strict=True) if w)
            row[name] = weighted_scores(mixed, y, min_support if name == "photos" else 1)
        rows.append(row)
    val = [name for name in outputs if name != "photos"]

    def rank(row: dict) -> tuple[float, float]:
        mean = float(np.mean([row[n]["accuracy"] for n in val])) if val else 0.0
        return mean, row["photos"]["balanced_accuracy"] if "photos" in row else 0.0

    return sorted(rows, key=rank, reverse=True)


def grid_cells(row: dict) -> str:
    return " | ".join(
        f"{n} {m['accuracy']:.3f}" + (f" balanced {m['balanced_accuracy']:.3f}" if n == "photos" else "")
        for n, m in row.items()
        if n != "weights"
    )


def summary_cells(by_set: dict) -> list[str]:
    """Accuracy/macro-F1 per set; for the photos also balanced accuracy and the recalls that decide a default."""
    cells = [f"{s} {m['accuracy']:.3f}/{m['macro_f1']:.3f}" for s, m in by_set.items()]
    if "photos" in by_set:
        photos = by_set["photos"]
        per = photos["per_class"]
        recall = " ".join(f"{k[:3]} {per[k]['recall']:.2f}" for k in per if per[k]["support"])
        angry = f", angry precision {per['angry']['precision']:.2f}" if "angry" in per else ""
        cells.append(f"photos balanced {photos['balanced_accuracy']:.3f} (recall {recall}{angry})")
    return cells


if __name__ == "__main__":
    parser = get_args_parser()
    try:
        main(parser.parse_args())
    except ValueError as exc:
        parser.error(str(exc))
