"""Judge a candidate version of the default against the served one, by issue 32's rule for a new default: RAF-DB val
and FER2013 val within half a point of the base's accuracy, the photos' balanced accuracy no lower, and a lower cost
per face (crop + preprocess + model), with the ratio to the fast model it is held to (at most 2.5).

Both versions run as served (``served_predictor``: the environment's backend, gate, mirror pass), each on faces
prepared as its own manifest says: the largest face of every labelled shared photo, found and cut as the service
does, and both val sets (``benchmarks.gate``'s faces). The cost is the mean over the first ``--faces`` photos' faces,
one face a call, the fast model, the base and the candidate interleaved face by face so the machine's load hits them
alike. Prints each figure and verdict; writes ``candidate.json`` and ``candidate.png``. The photos are development
data: a candidate is chosen on val, and the photos only check it.

A candidate published to a scratch store is measured there (``EMOTION_STORE_PATH``); that store needs the base
version, the fast model and the detector too (copy them from ``model_store``).

    EMOTION_STORE_PATH=runs/store python -m benchmarks.candidate --version 1.2.0 [--base-version 1.1.0] [--faces 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import find_entry, pyplot, save_report, served_predictor, service_settings
from benchmarks.gate import Faces, photo_faces, scores, timing, val_sets
from model_store import Predictor, to_uint8_face
from model_store.store import newest, scan
from service.detection.align import FaceCropper

VAL_TOLERANCE = 0.005  # accuracy a val set may lose against the base
COST_BOUND = 2.5  # the default's cost per face over the fast model's, at most
PHOTO_SUPPORT = 100  # the photos' balanced accuracy counts labels with this many photos (as benchmarks.eval_photos)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="emotion_transfer")
    p.add_argument("--version", required=True, help="the candidate version")
    p.add_argument("--base-version", help="the version it would replace (default: the newest other one)")
    p.add_argument("--fast", default="fer_emotion_cnn", help="the model the cost is held against")
    p.add_argument("--faces", type=int, default=300, help="photos' faces timed")
    p.add_argument("--val-limit", type=int, help="faces per val set (default: all)")
    p.add_argument("--photos-limit", type=int, help="photos' faces scored (default: all)")
    p.add_argument("--output", type=Path, default=Path("runs/candidate"))
    return p


def accuracy_rows(predictor: Predictor, photos: Faces, val_limit: int | None) -> dict[str, dict]:
    """Accuracy, balanced accuracy, per-label recall and the gate's share on the photos and both val sets, with
    faces cut and sized for this predictor."""
    spec, labels, cropper = predictor.manifest.input, predictor.labels, FaceCropper()
    crops = np.stack([to_uint8_face(cropper.crop(image, box, spec), spec) for image, box, _ in photos])
    sets = {"photos": (crops, np.array([t for *_, t in photos])), **val_sets(spec, labels, val_limit)}
    rows = {}
    for name, (faces, targets) in sets.items():
        r = scores(predictor, faces, targets)
        pred = r.pop("pred")
        r["recall"] = {labels[k]: float(np.mean(pred[targets == k] == k)) for k in np.unique(targets)}
        if name == "photos":
            r["balanced_accuracy"] = mean_recall(pred, targets, PHOTO_SUPPORT)
        rows[name] = r
    return rows


def mean_recall(pred: np.ndarray, targets: np.ndarray, min_support: int) -> float:
    """Balanced accuracy as ``benchmarks.eval_photos`` counts it: the mean recall over the labels with at least
    ``min_support`` faces (over every label present when none has that many, as with ``--photos-limit``)."""
    counts = np.bincount(targets)
    counted = np.flatnonzero(counts >= min(min_support, counts.max()))
    return float(np.mean([np.mean(pred[targets == k] == k) for k in counted]))


def cost(runs: dict[str, Predictor], photos: Faces, limit: int) -> dict[str, float]:
    """Mean ms per photo face (crop + preprocess + model), the runs interleaved face by face (``gate.timing``)."""
    return {name: c["ms_per_face_mean"] for name, c in timing(runs, photos, limit).items()}


def verdict(base: dict[str, dict], candidate: dict[str, dict], ms: dict[str, float]) -> dict[str, bool]:
    """Issue 32's rule for a new default, criterion by criterion (``ms``: the fast model, base and candidate)."""
    fast, base_ms, cand_ms = ms.values()
    out = {
        f"{name} within {100 * VAL_TOLERANCE:g} point": candidate[name]["accuracy"]
        >= base[name]["accuracy"] - VAL_TOLERANCE
        for name in ("rafdb_val", "fer2013_val")
    }
    out["photos' balanced accuracy no lower"] = (
        candidate["photos"]["balanced_accuracy"] >= base["photos"]["balanced_accuracy"]
    )
    out["cheaper per face than the base"] = cand_ms < base_ms
    out[f"per face at most {COST_BOUND:g}x the fast model"] = cand_ms <= COST_BOUND * fast
    return out


def plot(rows: dict[str, dict], ms: dict[str, float], path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    sets, width = list(next(iter(rows.values()))), 0.8 / len(rows)
    for i, (version, by_set) in enumerate(rows.items()):
        xs = [j + i * width for j in range(len(sets))]
        left.bar(xs, [by_set[s]["accuracy"] for s in sets], width, label=f"{version}: accuracy")
        left.scatter(xs, [by_set[s]["balanced_accuracy"] for s in sets], color="black", marker="_", s=200, zorder=3)
    left.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(sets))], sets)
    left.set_ylim(0.4, 0.95)
    left.set_title("accuracy (bars) and balanced accuracy (ticks), as served", fontsize=9)
    left.legend(fontsize=8)
    fast = next(iter(ms.values()))
    right.bar(list(ms), list(ms.values()), color="#4a7fb0")
    right.axhline(COST_BOUND * fast, color="gray", ls="--", lw=0.8, label=f"{COST_BOUND:g}x the fast model")
    for i, v in enumerate(ms.values()):
        right.text(i, v, f"{v:.2f} ms (x{v / fast:.2f})", ha="center", va="bottom", fontsize=8)
    right.set_ylabel("ms per photo face, mean")
    right.set_title("crop + preprocess + model, one face a call, interleaved", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def base_version(model: str, candidate: str) -> str:
    """The newest version of ``model`` other than the candidate."""
    entries, _ = scan(service_settings().store_path)
    others = [e.manifest.version for e in entries if e.manifest.name == model and e.manifest.version != candidate]
    if not others:
        raise SystemExit(f"no other version of {model} in the store to judge {candidate} against")
    return newest(others)


def main(args: argparse.Namespace) -> dict:
    settings = service_settings()
    base_v = args.base_version or base_version(args.model, args.version)
    runs = {
        args.fast: served_predictor(find_entry(args.fast), settings),
        base_v: served_predictor(find_entry(args.model, base_v), settings),
        args.version: served_predictor(find_entry(args.model, args.version), settings),
    }
    for predictor in runs.values():
        predictor.warmup()
    photos = photo_faces(runs[base_v].labels)[: args.photos_limit]
    rows = {v: accuracy_rows(runs[v], photos, args.val_limit) for v in (base_v, args.version)}
    ms = cost(runs, photos, args.faces)
    judged = verdict(rows[base_v], rows[args.version], ms)
    for version, by_set in rows.items():
        for name, r in by_set.items():
            print(
                f"{version:>8s} {name:12s}: accuracy {r['accuracy']:.4f}  balanced {r['balanced_accuracy']:.4f}  "
                f"gate answers {r['gate_share']:6.1%}  ECE {r['ece']:.4f}"
            )
    fast = ms[args.fast]
    for name, v in ms.items():
        print(f"{name:>16s}: {v:.2f} ms per photo face (x{v / fast:.2f})")
    for criterion, met in judged.items():
        print(f"{'met' if met else 'NOT met':>8s}: {criterion}")
    out = {"model": args.model, "backend": settings.backend, "accuracy": rows, "ms_per_face": ms, "verdict": judged}
    save_report(args.output, "candidate", out, lambda path: plot(rows, ms, path))
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
