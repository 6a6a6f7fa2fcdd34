"""How far the ``reliable`` flag can be trusted: the coverage-accuracy curve of every face's quality, per dataset.

Runs the default model as the service does (``model_store.Predictor``, the service's backend, mirror TTA) over

* RAF-DB val: the seeded, stratified 10% of ``shared/data/rafdb/train`` every round used (``training.make_manifest``,
  seed 0: 1,226 aligned 100 px faces). Each is a face crop, as sent to ``/predict/face``: the whole image is the face
  (size 100 px, sharpness of the crop); its landmarks (for the pose) and detector score come from the service's
  detector run on it with the padded second scan (``close_up_faces``), since a crop alone has none.
* the 900 shared photos: the service's detector (and its fallbacks), the largest face, the service's crop, the hand
  label mapped to the model's labels (``contempt`` left out), as ``benchmarks/eval_photos.py`` does.

For each face it computes ``service.quality``'s fields (and, apart, the plain and the mirrored pass's probabilities:
whether their agreement beats the margin), then writes the coverage-accuracy curve per dataset and per field (keep
the faces scoring highest on it) and, for the chosen (``--choose``) or the service's thresholds, coverage / accuracy /
per-label figures for reliable versus all faces with a bootstrap interval of the gain, the cost per face of the
quality fields (against the model's own), and ``reliability.png``.

``--choose``: the picture gates are ``GATES_KEPT`` (the ``gates`` table shows what each takes out of the reliable
faces per set), the margin the lowest of a coarse grid keeping at least 0.78 of RAF-DB val (issue 29 asks 0.75) at
+5.5 points (asks +5) whose bootstrap 5th percentile still reaches +5, and +3 points on the photos; the photos'
coverage is what the lowest such margin maximises. ``signals`` compares the margin with entropy, the top-1
probability and the mirror agreement cut at the same RAF-DB coverage. ``--cache`` keeps every face's signals in a
scratch pickle so that a choice reruns in seconds.

For a routed ensemble (the default model scores gray faces with some members, colour faces with others) it also
measures the margin->accuracy curve per route within each set (``routes``): whether a gray face and a colour face at
the same margin are equally often right (the log-odds a gray face gains at equal margin, with a bootstrap interval),
and which per-route margin pairs would meet the targets the plain rule is chosen by. A per-route threshold is only a
model property where the routes differ within a set; where they agree within one set, a pair meeting the targets is
fitted to the sets' gray shares (13% of RAF-DB, 78% of the photos), a dataset proxy, and is not shipped.

    python -m benchmarks.reliability [--output model_store/emotion_transfer/1.1.0/reports/reliability] [--choose]
        [--cache /tmp/reliability.pkl]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks import add_model_argument, find_entry, served_predictor, service_settings
from benchmarks.eval_photos import inside_bars, read_photos, service_detector, service_fallbacks
from model_store import Predictor
from model_store.preprocess import to_uint8_face
from model_store.routing import gray_rows
from service.config import QualitySettings
from service.detection import FaceDetector, close_up_faces
from service.detection.align import FaceCropper
from service.quality import PictureQuality, assess, certainty, picture_quality
from training.make_manifest import split_source

ROOT = Path(__file__).resolve().parents[1]
RAFDB = ROOT.parent / "shared" / "data" / "rafdb"
DEFAULT_OUTPUT = ROOT / "model_store" / "emotion_transfer" / "1.1.0" / "reports" / "reliability"
COVERAGES = [round(c, 2) for c in np.arange(0.05, 1.0001, 0.05)]
MIN_COVERAGE = {"rafdb_val": 0.78}  # issue 29 asks 0.75 of RAF-DB val; 3 points of headroom for held-out faces
ISSUE_GAIN = {"rafdb_val": 5.0, "photos": 3.0}  # points over all faces asked of the reliable ones (issue 29)
TARGET_GAIN = {"rafdb_val": 5.5, "photos": 3.0}  # what the choice asks: half a point of headroom on RAF-DB
MARGINS = [round(float(m), 2) for m in np.arange(0.0, 0.601, 0.05)]  # a coarse grid: no tuning to the last digit
# The picture gates, fixed by what the gate table shows (a gate is kept where it takes out of the margin-reliable
# faces ones far less often right on one set and costs nothing on the other): no RAF-DB face is under 32 px, and the
# photos' are right 3 times in 7; sharpness takes 0.9% of RAF-DB at their usual accuracy; a frontal gate takes one
# RAF-DB face and the photos' profile faces, mostly one label (disgust) of one collection.
GATES_KEPT = {"min_face_px": 32, "min_sharpness": 0.0, "min_frontal": 0.0}
GATE_VALUES = {
    "min_face_px": [24, 32, 48, 64],
    "min_sharpness": [10.0, 20.0, 40.0, 80.0],
    "min_frontal": [0.1, 0.2, 0.3],
}
GATES = tuple(GATE_VALUES)
FIELDS = ["margin", "entropy", "top1", "mirror_agreement", "sharpness", "face_px", "frontal", "detector_score"]
CERTAINTY = ["margin", "entropy", "top1", "mirror_agreement"]
CHOSEN_BY = (
    "--choose: the picture gates GATES_KEPT (see 'gates'), then the lowest margin of MARGINS keeping at least "
    "min_coverage of RAF-DB val at the target gain on every set (see 'margin_search')"
)
MARGIN_BINS = [round(float(b), 1) for b in np.arange(0.0, 1.01, 0.1)]
ROUTE_MARGINS = [round(float(m), 3) for m in np.arange(0.0, 0.601, 0.025)]


@dataclass
class FaceSet:
    """Every face of one dataset: its picture quality, the model's probabilities and the true label index."""

    name: str
    pictures: list[PictureQuality]
    probs: np.ndarray
    targets: np.ndarray
    sources: list = field(default_factory=list)  # (image, box, landmarks, score) per face, to time the fields
    gray: np.ndarray | None = None  # the routed model's gray test per face; None for a model without routes
    passes: np.ndarray | None = None  # 2 x faces x labels: the plain and the mirrored pass's own probabilities

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(axis=1) == self.targets

    @property
    def margins(self) -> np.ndarray:
        return np.array([certainty(p)[0] for p in self.probs])


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    add_model_argument(p)
    p.add_argument("--version", help="model version (default: the newest, what the service serves)")
    p.add_argument("--choose", action="store_true", help="grid-search the thresholds (else: the service's settings)")
    p.add_argument("--limit", type=int, help="faces per set at most (a quick run)")
    p.add_argument("--cache", type=Path, help="pickle of every face's signals: read if there, else written")
    return p


def largest(detector: FaceDetector, image: np.ndarray, padding: float):
    """The largest face the service's detector finds in ``image`` (with its padded second scan), or None."""
    found = detector.detect(image) or close_up_faces(detector, image, padding)
    return found[0] if found else None


def rafdb_faces(predictor: Predictor, detector: FaceDetector, limit: int | None) -> FaceSet:
    """RAF-DB val through the /predict/face path, with landmarks and a score from the detector (see the doc)."""
    samples = split_source(RAFDB, 0.1, 0)["val"][:limit]
    labels, padding = predictor.labels, service_settings().detector.close_up_padding
    crops, pictures, sources = [], [], []
    for sample in tqdm(samples, desc="rafdb val", unit="face", leave=False):
        crop = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        face = largest(detector, crop, padding)
        source = (crop, (0, 0, crop.shape[1], crop.shape[0]), face and face.landmarks, face and face.score)
        pictures.append(picture_quality(*source))
        crops.append(crop)
        sources.append(source)
    probs = predictor.predict(crops).probabilities
    targets = np.array([labels.index(s.label) for s in samples])
    return FaceSet(
        "rafdb_val", pictures, probs, targets, sources, gray_faces(predictor, crops), passes(predictor, crops)
    )


def photo_faces(predictor: Predictor, detector: FaceDetector, limit: int | None) -> FaceSet:
    """The largest face of each labelled photo, found, cut and judged as ``/predict/image`` does."""
    photos, names = read_photos()
    photos, names = inside_bars(photos[:limit]), names[:limit]
    found = [detector.detect(image) for image in tqdm(photos, desc="photos", unit="photo", leave=False)]
    found = service_fallbacks(photos, found, {}, detector)
    cropper, spec, labels = FaceCropper(), predictor.manifest.input, predictor.labels
    crops, pictures, targets, sources = [], [], [], []
    for image, name, faces in zip(photos, names, found, strict=True):
        if faces and name in labels:
            source = (image, faces[0].box, faces[0].landmarks, faces[0].score)
            crops.append(cropper.crop(image, faces[0].box, spec))
            pictures.append(picture_quality(*source))
            targets.append(labels.index(name))
            sources.append(source)
    probs = predictor.predict(crops).probabilities
    gray = gray_faces(predictor, crops)
    return FaceSet("photos", pictures, probs, np.array(targets), sources, gray, passes(predictor, crops))


def passes(predictor: Predictor, crops: list[np.ndarray]) -> np.ndarray:
    """The plain and the mirrored pass's probabilities apart (the service averages their logits): how far the two
    agree is a candidate trust signal."""
    single = Predictor(predictor.manifest, predictor.runner, tta=False)
    return np.stack([single.predict(c).probabilities for c in (crops, [cv2.flip(c, 1) for c in crops])])


def gray_faces(predictor: Predictor, crops: list[np.ndarray]) -> np.ndarray | None:
    """The routed model's own gray test on each crop as the model sees it (resized), or None without routes."""
    routes = getattr(predictor.runner, "routes", None)
    if routes is None or not crops:
        return None
    faces = np.stack([to_uint8_face(crop, predictor.image_spec) for crop in crops])
    pixels = faces.transpose(0, 3, 1, 2).astype(np.float32) / 255  # 0..1 pixels: mean 0, std 1 below
    return gray_rows(pixels, np.zeros(pixels.shape[1], np.float32), np.ones(pixels.shape[1], np.float32), routes.spread)


def feature(faces: FaceSet, name: str) -> np.ndarray:
    """One quality field per face, higher = more trustworthy (unknown pose counts as frontal)."""
    if name == "margin":
        return faces.margins
    if name == "entropy":
        return -np.array([certainty(p)[1] for p in faces.probs])
    if name == "frontal":
        return np.array([1.0 if q.pose is None else q.pose.frontal for q in faces.pictures])
    if name == "detector_score":
        return np.array([q.detector_score or 0.0 for q in faces.pictures])
    if name == "top1":
        return faces.probs.max(axis=1)
    if name == "mirror_agreement":  # the lower of the plain and the mirrored pass's probability for the answer
        rows, top = np.arange(len(faces.probs)), faces.probs.argmax(axis=1)
        return np.minimum(faces.passes[0][rows, top], faces.passes[1][rows, top])
    return np.array([getattr(q, name) for q in faces.pictures], float)


def curve(score: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Accuracy of the ``coverage`` share of faces scoring highest, for each coverage in ``COVERAGES`` (ties in a
    seeded random order: RAF-DB's faces all have one size)."""
    order = np.lexsort((np.random.default_rng(0).random(len(score)), -score))
    out = []
    for coverage in COVERAGES:
        kept = order[: max(1, round(coverage * len(order)))]
        out.append({"coverage": coverage, "accuracy": round(float(correct[kept].mean()), 4)})
    return out


def flags(faces: FaceSet, rule) -> np.ndarray:
    return np.array([assess(q, p, rule).reliable for q, p in zip(faces.pictures, faces.probs, strict=True)])


def figures(faces: FaceSet, reliable: np.ndarray, labels: list[str]) -> dict:
    """Coverage and accuracy of reliable versus all faces, overall and per true label."""
    correct, pred = faces.correct, faces.probs.argmax(axis=1)

    def part(mask: np.ndarray) -> dict:
        tp = lambda k: int(((pred == k) & (faces.targets == k) & mask).sum())  # noqa: E731
        per = {}
        for k, label in enumerate(labels):
            support, predicted = int((mask & (faces.targets == k)).sum()), int((mask & (pred == k)).sum())
            per[label] = {
                "support": support,
                "recall": round(tp(k) / support, 4) if support else None,
                "precision": round(tp(k) / predicted, 4) if predicted else None,
            }
        return {"faces": int(mask.sum()), "accuracy": round(float(correct[mask].mean()), 4), "per_label": per}

    every, kept = part(np.ones(len(correct), bool)), part(reliable)
    for label in labels:
        support = every["per_label"][label]["support"]
        kept["per_label"][label]["coverage"] = (
            round(kept["per_label"][label]["support"] / support, 4) if support else None
        )
    gain = round(100 * (kept["accuracy"] - every["accuracy"]), 2)
    out = {
        "coverage": round(float(reliable.mean()), 4),
        "gain_points": gain,
        "gain_ci90": gain_interval(correct, reliable),
    }
    return out | {"all": every, "reliable": kept}


def gain_interval(correct: np.ndarray, reliable: np.ndarray, repeats: int = 1000) -> list[float]:
    """A bootstrap 90% interval of the gain (points) over the set's faces: how far another draw of such faces (a
    held-out set) may land from the measured gain."""
    rows = np.random.default_rng(0).integers(0, len(correct), (repeats, len(correct)))
    right, kept = correct[rows].astype(float), reliable[rows]
    gains = 100 * ((right * kept).sum(1) / np.maximum(kept.sum(1), 1) - right.mean(1))
    return [round(float(np.percentile(gains, q)), 2) for q in (5, 95)]


def vectorised(faces: FaceSet) -> dict[str, np.ndarray]:
    return {
        "min_face_px": feature(faces, "face_px"),
        "min_sharpness": feature(faces, "sharpness"),
        "min_frontal": feature(faces, "frontal"),
        "min_margin": faces.margins,
    }


def kept_by(values: dict[str, np.ndarray], rule: dict) -> np.ndarray:
    return np.logical_and.reduce([values[k] >= v for k, v in rule.items()])


def outcome(faces: FaceSet, kept: np.ndarray) -> dict:
    """Coverage and gain (points over all faces) of the faces in ``kept``."""
    accuracy = float(faces.correct[kept].mean()) if kept.any() else 0.0
    return {"coverage": round(float(kept.mean()), 4), "gain_points": round(100 * (accuracy - faces.correct.mean()), 2)}


def meets(row: dict) -> bool:
    """Whether a row (an outcome per set name) meets ``MIN_COVERAGE`` and ``TARGET_GAIN``, and where it carries a
    bootstrap interval of the gain, whether its low end still meets the issue's target (``ISSUE_GAIN``)."""
    sets = [n for n in TARGET_GAIN if n in row]
    return (
        all(row[n]["coverage"] >= c for n, c in MIN_COVERAGE.items() if n in row)
        and all((row[n]["gain_points"] or 0) >= TARGET_GAIN[n] for n in sets)
        and all(row[n].get("gain_ci90", [ISSUE_GAIN[n]])[0] >= ISSUE_GAIN[n] for n in sets)
    )


def margin_search(sets: list[FaceSet], gates: dict) -> list[dict]:
    """Every margin of ``MARGINS`` with ``gates`` and its outcome per set; ``chosen`` marks the lowest margin that
    meets the targets (the most photo faces kept: every set's coverage falls as the margin rises)."""
    fields = [vectorised(s) for s in sets]
    rows = []
    for margin in MARGINS:
        rule = {**gates, "min_margin": margin}
        row: dict = {"min_margin": margin}
        for faces, values in zip(sets, fields, strict=True):
            kept = kept_by(values, rule)
            row[faces.name] = outcome(faces, kept) | {"gain_ci90": gain_interval(faces.correct, kept)}
        rows.append(row | {"meets": meets(row)})
    first = next((r for r in rows if r["meets"]), None)
    return [r | {"chosen": r is first} for r in rows]


def gate_table(sets: list[FaceSet], margin: float) -> list[dict]:
    """What each picture gate alone does to the faces the margin calls reliable, per set: how many it takes out and
    how often those were right, against the faces it keeps (the evidence behind ``GATES_KEPT``)."""
    rows = []
    for gate, values in GATE_VALUES.items():
        for value in values:
            row: dict = {"gate": gate, "value": value}
            for faces in sets:
                v = vectorised(faces)
                base = v["min_margin"] >= margin
                out, kept = base & (v[gate] < value), base & (v[gate] >= value)
                row[faces.name] = {"removed": int(out.sum()), "removed_accuracy": share(faces.correct, out)}
                row[faces.name] |= {"kept_accuracy": share(faces.correct, kept)} | outcome(faces, kept)
            rows.append(row)
    return rows


def logistic(x: np.ndarray, y: np.ndarray, steps: int = 30) -> np.ndarray:
    """Logistic-regression coefficients of the columns of ``x`` (then the intercept), by Newton's method: how far
    each column moves the log-odds of ``y`` with the others held."""
    design = np.c_[x, np.ones(len(x))]
    w = np.zeros(design.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ w, -30, 30)))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-6 * np.eye(len(w))
        w = w + np.linalg.solve(hessian, design.T @ (y - p))
    return w


def route_effect(margins: np.ndarray, gray: np.ndarray, correct: np.ndarray, repeats: int = 200) -> dict:
    """The log-odds of a right answer a gray face gains over a colour face at the same margin, with a bootstrap 95%
    interval: an interval holding 0 says the two routes' margin->accuracy curves agree within this set."""
    x, y = np.c_[margins, gray.astype(float)], correct.astype(float)
    rng = np.random.default_rng(0)
    boot = [logistic(x[i], y[i])[1] for i in (rng.integers(0, len(y), len(y)) for _ in range(repeats))]
    low, high = (round(float(np.percentile(boot, q)), 2) for q in (2.5, 97.5))
    return {"gray_log_odds": round(float(logistic(x, y)[1]), 2), "ci95": [low, high], "agree": bool(low <= 0 <= high)}


def route_curves(faces: FaceSet, labels: list[str]) -> dict:
    """Per route (gray, colour) within one set: faces, their true labels (a route can be a label mix: the photos'
    colour faces are half disgust), accuracy and accuracy per margin bin; and the route effect."""
    margins, correct, out = faces.margins, faces.correct, {}
    for route, mask in (("gray", faces.gray), ("colour", ~faces.gray)):
        bins = []
        for low, high in itertools.pairwise(MARGIN_BINS):
            inside = mask & (margins >= low) & ((margins < high) | (high >= 1.0))
            accuracy = round(float(correct[inside].mean()), 4) if inside.any() else None
            bins.append({"margin": [low, high], "faces": int(inside.sum()), "accuracy": accuracy})
        out[route] = {
            "faces": int(mask.sum()),
            "labels": {label: int((mask & (faces.targets == k)).sum()) for k, label in enumerate(labels)},
            "accuracy": share(correct, mask),
            "by_margin": bins,
        }
    out["effect"] = route_effect(margins, faces.gray, correct)
    return out


def route_search(sets: list[FaceSet], rule: QualitySettings) -> list[dict]:
    """Per-route margin pairs (the rule's picture gates kept) meeting the targets the plain rule is chosen by
    (``meets``), most photo faces kept first, each with the accuracy of the faces it calls reliable per route: a pair
    calling gray faces reliable that are less accurate than the set's average face is no trust signal."""
    prepared = []
    for faces in sets:
        v = vectorised(faces)
        gates = np.logical_and.reduce([v[k] >= getattr(rule, k) for k in GATES])
        prepared.append((faces.name, gates, faces.margins, faces.gray, faces.correct))
    rows = []
    for min_gray, min_colour in itertools.product(ROUTE_MARGINS, ROUTE_MARGINS):
        row: dict = {"min_margin_gray": min_gray, "min_margin_colour": min_colour}
        for name, gates, margins, gray, correct in prepared:
            kept = gates & (margins >= np.where(gray, min_gray, min_colour))
            row[name] = {
                "coverage": round(float(kept.mean()), 4),
                "gain_points": round(100 * (correct[kept].mean() - correct.mean()), 2) if kept.any() else None,
                "accuracy_all": round(float(correct.mean()), 4),
                "accuracy_reliable_gray": share(correct, kept & gray),
                "accuracy_reliable_colour": share(correct, kept & ~gray),
            }
        if meets(row):
            rows.append(row)
    return sorted(rows, key=lambda r: -min(r[s.name]["coverage"] for s in sets))


def share(correct: np.ndarray, mask: np.ndarray) -> float | None:
    """Accuracy of the faces in ``mask``, None for none."""
    return round(float(correct[mask].mean()), 4) if mask.any() else None


def routes_report(sets: list[FaceSet], rule: QualitySettings, labels: list[str]) -> dict | None:
    """The per-route measurement (see the module doc), or None for a model without routes."""
    if any(s.gray is None for s in sets):
        return None
    curves = {s.name: route_curves(s, labels) for s in sets}
    agree = [name for name, c in curves.items() if c["effect"]["agree"]]
    return {
        "test": "the model's own gray test on the resized crop (mean channel spread under its threshold)",
        "gray_share": {s.name: round(float(s.gray.mean()), 4) for s in sets},
        "curves": curves,
        "pairs_meeting_targets": route_search(sets, rule)[:10],
        "per_route_is_a_model_property": not agree,
        "routes_agree_within": agree,
    }


def signal_table(sets: list[FaceSet], coverage: float) -> dict:
    """Each certainty signal cut where it keeps ``coverage`` of RAF-DB val (the rule's share), and what that cut
    keeps of every set: at equal RAF-DB coverage, the signal keeping most photo faces at the target gain is best."""
    out = {}
    for signal in CERTAINTY:
        scores = {s.name: feature(s, signal) for s in sets}
        cut = float(np.quantile(scores[sets[0].name], 1 - coverage))
        out[signal] = {"cut": round(cut, 4)} | {s.name: outcome(s, scores[s.name] >= cut) for s in sets}
    return out


def model_ms_per_face(predictor: Predictor, faces: FaceSet, n: int = 48) -> float:
    """Milliseconds the model takes on one face crop alone (a batch of one, as ``/predict/face``): the baseline."""
    crops = [source[0] for source in faces.sources[:n]]
    predictor.predict(crops[:1])
    started = time.perf_counter()
    for crop in crops:
        predictor.predict([crop])
    return round((time.perf_counter() - started) / len(crops) * 1000, 3)


def cost_per_face(faces: FaceSet, rule: QualitySettings, repeats: int = 3) -> dict:
    """Milliseconds per face of ``picture_quality`` + ``assess`` (every quality field and the flag), in one thread."""
    started = time.perf_counter()
    for _ in range(repeats):
        for source, probs in zip(faces.sources, faces.probs, strict=True):
            assess(picture_quality(*source), probs, rule)
    n = repeats * len(faces.sources)
    return {"faces_timed": n, "ms_per_face": round((time.perf_counter() - started) / n * 1000, 4)}


def with_ratio(cost: dict, model_ms: float) -> dict:
    """The quality fields' cost beside the model's on one face, and their ratio (both timed in this run)."""
    return cost | {"model_ms_per_face": model_ms, "share_of_model": round(cost["ms_per_face"] / model_ms, 4)}


def plot(curves: dict, chosen: dict, rule: QualitySettings, path: Path) -> None:
    """The coverage-accuracy curve of every field per set, the ``reliable`` flag's point on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (name, by_field) in zip(axes[0], curves.items(), strict=True):
        for what, points in by_field.items():
            label = "keep lowest entropy" if what == "entropy" else f"keep highest {what}"
            ax.plot([p["coverage"] for p in points], [p["accuracy"] for p in points], label=label)
        point = chosen[name]
        flag = f"reliable (margin >= {rule.min_margin:g}, face >= {rule.min_face_px} px)"
        ax.scatter([point["coverage"]], [point["reliable"]["accuracy"]], color="black", zorder=5, label=flag)
        ax.axvline(0.75, color="gray", linestyle=":", linewidth=1)
        ax.set(title=f"{name}: {point['all']['faces']} faces", xlabel="coverage (share of faces kept)")
        ax.set(ylabel="accuracy of the faces kept")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def face_sets(predictor: Predictor, limit: int | None, cache: Path | None) -> list[FaceSet]:
    """Both sets measured, or read from ``cache`` (a scratch pickle, so that a threshold search reruns in seconds)."""
    if cache is not None and cache.exists():
        return pickle.loads(cache.read_bytes())
    detector = service_detector()
    sets = [rafdb_faces(predictor, detector, limit), photo_faces(predictor, detector, limit)]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(sets))
    return sets


def main(args: argparse.Namespace) -> dict:
    entry = find_entry(args.model, args.version)
    settings = service_settings()
    predictor = served_predictor(entry, settings)
    sets = face_sets(predictor, args.limit, args.cache)
    curves = {s.name: {f: curve(feature(s, f), s.correct) for f in FIELDS} for s in sets}
    search = margin_search(sets, GATES_KEPT) if args.choose else []
    pick = next((r for r in search if r["chosen"]), None)
    rule = QualitySettings(**GATES_KEPT, min_margin=pick["min_margin"]) if pick else settings.quality
    chosen = {s.name: figures(s, flags(s, rule), predictor.labels) for s in sets}
    args.output.mkdir(parents=True, exist_ok=True)
    model_ms = model_ms_per_face(predictor, sets[0])
    report = {
        "model": entry.manifest.key,
        "backend": settings.backend,
        "thresholds": rule.model_dump(),
        "chosen_by": CHOSEN_BY if pick else "the service's settings",
        "targets": {"issue": ISSUE_GAIN, "min_coverage": MIN_COVERAGE, "gain_points": TARGET_GAIN},
        "results": chosen,
        "cost": {s.name: with_ratio(cost_per_face(s, rule), model_ms) for s in sets},
        "curves": curves,
        "margin_search": search,
        "gates": gate_table(sets, rule.min_margin),
        "signals": signal_table(sets, chosen[sets[0].name]["coverage"]),
        "routes": routes_report(sets, rule, predictor.labels),
    }
    (args.output / "reliability.json").write_text(json.dumps(report, indent=1))
    plot(curves, chosen, rule, args.output / "reliability.png")
    for name, r in chosen.items():
        print(
            f"{name}: reliable {r['coverage']:.1%} of {r['all']['faces']} faces, accuracy {r['reliable']['accuracy']}"
            f" vs {r['all']['accuracy']} (+{r['gain_points']} points)"
        )
    print("thresholds:", rule.model_dump())
    if report["routes"]:
        for name, c in report["routes"]["curves"].items():
            effect = c["effect"]
            print(f"{name}: a gray face's log-odds at equal margin {effect['gray_log_odds']:+} {effect['ci95']}")
        print("per-route margins a model property:", report["routes"]["per_route_is_a_model_property"])
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
