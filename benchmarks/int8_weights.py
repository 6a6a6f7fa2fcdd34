"""Does this CPU's int8 arithmetic cost the models accuracy? Each model served int8 with 8-bit weights (as
published), with 7-bit weights (``model_store.int8``: what ``EMOTION_INT8_WEIGHTS=auto`` serves on x86 CPUs without
VNNI) and as its fp32 graph, over the 900 shared photos' largest faces and both val sets, all as served otherwise
(mirror pass for unsure faces, the default's gate).

On a CPU with VNNI the three agree within quantisation noise; on one without it, 8-bit weights saturate the 16-bit
sums of its int8 products and lose points. The photos are development data (noisy labels). Writes
``int8_weights.json`` and ``int8_weights.png``.

    python -m benchmarks.int8_weights [--models fer_emotion_cnn emotion_transfer] [--output runs/int8_weights]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import find_entry, pyplot, save_report, served_predictor, service_settings
from benchmarks.gate import photo_faces, scores, val_sets
from model_store import to_uint8_face
from model_store.int8 import cpu_flags, saturates
from service.detection.align import FaceCropper

FIGURES = ("accuracy", "balanced_accuracy", "gate_share")
VARIANTS = {"int8, 8-bit weights": ("onnx-int8", "8"), "int8, 7-bit weights": ("onnx-int8", "7"), "fp32": ("onnx", "8")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["fer_emotion_cnn", "emotion_transfer"])
    p.add_argument("--val-limit", type=int, default=None, help="faces per val set (default: all)")
    p.add_argument("--output", type=Path, default=Path("runs/int8_weights"))
    return p


def score_model(name: str, faces: list, limit: int | None) -> dict:
    """Accuracy, balanced accuracy and the share of faces its gate answered (0 without one), per variant and set."""
    entry, cropper, rows = find_entry(name), FaceCropper(), {}
    spec, labels = entry.manifest.input, entry.manifest.labels  # every variant reads the same faces: cut them once
    crops = np.stack([to_uint8_face(cropper.crop(i, b, spec), spec) for i, b, _ in faces])
    sets = {"photos": (crops, np.array([t for *_, t in faces])), **val_sets(spec, labels, limit)}
    for variant, (backend, bits) in VARIANTS.items():
        update = {"backend": backend, "int8_weights": bits}
        predictor = served_predictor(entry, service_settings().model_copy(update=update))
        rows[variant] = {}
        for set_name, (x, y) in sets.items():
            r = scores(predictor, x, y)
            rows[variant][set_name] = {k: round(float(r[k]), 4) for k in FIGURES}
    return rows


def plot(results: dict, path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    models = list(results["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        rows = results["models"][name]
        sets = list(next(iter(rows.values())))
        for i, variant in enumerate(rows):
            values = [rows[variant][s]["accuracy"] for s in sets]
            ax.bar(np.arange(len(sets)) + (i - 1) * 0.27, values, 0.27, label=variant)
        ax.set_xticks(range(len(sets)), sets)
        ax.set_ylim(0.4, 0.95)
        ax.set_title(f"{name}: accuracy")
        ax.legend(fontsize=8)
    cpu = "saturating int8 (no VNNI)" if results["saturates"] else "exact int8 (VNNI)"
    fig.suptitle(f"int8 weights on this CPU: {cpu}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    labels = find_entry(args.models[0]).manifest.labels
    faces = photo_faces(labels)
    flags = cpu_flags() or frozenset()
    results = {
        "saturates": saturates(),
        "cpu_flags": sorted(f for f in flags if "vnni" in f or f.startswith(("avx", "amx"))),
        "models": {name: score_model(name, faces, args.val_limit) for name in args.models},
    }
    print(f"this CPU's int8 products {'saturate' if results['saturates'] else 'are exact'}")
    print("\n".join(table(results)))
    save_report(args.output, "int8_weights", results, lambda path: plot(results, path))
    return results


def table(results: dict) -> list[str]:
    """The results as Markdown rows: photos accuracy / balanced, then each val set's accuracy."""
    lines = ["| model | variant | photos acc. / balanced | RAF-DB val | FER2013 val |", "|---|---|---|---|---|"]
    for name, rows in results["models"].items():
        for variant, r in rows.items():
            photos, raf, fer = r["photos"], r["rafdb_val"]["accuracy"], r["fer2013_val"]["accuracy"]
            lines.append(
                f"| {name} | {variant} | {photos['accuracy']:.4f} / {photos['balanced_accuracy']:.4f} "
                f"| {raf:.4f} | {fer:.4f} |"
            )
    return lines


if __name__ == "__main__":
    main(get_args_parser().parse_args())
