"""A lone face behind a gate: which of its mirror image's passes to run before the ensemble says it needs one.

A lone face (a photo with one face, a face crop) gets its mirror pass only if the ensemble's first pass is unsure
(``mirror_tta_margin``). Until the twenty-sixth round its mirror image rode in both of its calls anyway (the gate's
and the rest graph's: two rows cost less than two calls of one), though the ensemble was sure of a third of the
faces that reached the rest graph. Now (``Predictor.mirror_ahead``, ``MIRROR_AHEAD``) the gate sees the face alone,
and only faces whose gate margin is under the threshold take their mirror image into the rest call; the others
take the rest graph alone, and their mirror image the whole graph when the ensemble is unsure.

Over the shared photos' largest faces (found and cut as the service does), as served (int8, gate, mirror pass):
- each face's gate margin and whether the ensemble then needs the mirror pass, by gate margin;
- ms per face (crop + preprocess + model, one face a call): the fast model, the old plan (the mirror image in both
  calls, ``paired_plan``) and each threshold, interleaved face by face, with each one's ratio to the fast model;
- each plan's labels against the old plan's, and the largest probability difference (onnxruntime's int8 kernels
  round a row alike in any batch, not its float ops: a few thousandths).

Writes ``mirror_ahead.json`` and ``mirror_ahead.png``.

    python -m benchmarks.mirror_ahead [--thresholds 0 0.15 0.3 0.45 1.01] [--faces 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import find_entry, pyplot, save_report, served_predictor
from benchmarks.gate import photo_faces
from model_store import Predictor
from model_store.gate import log_probs, top_margin
from model_store.predictor import average_rows
from service.detection.align import FaceCropper


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="emotion_transfer")
    p.add_argument("--base", default="fer_emotion_cnn", help="the yardstick of issue 32's per-face cost")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.15, 0.3, 0.45, 1.01])
    p.add_argument("--faces", type=int, default=300, help="photos' faces timed (all are scored)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--output", type=Path, default=Path("runs/mirror_ahead"))
    return p


def paired_plan(predictor: Predictor, x: np.ndarray) -> np.ndarray:
    """The old plan's logits for one face (``x``: one row): the gate on the face and its mirror image in one call,
    then, where it is unsure, the rest graph on both rows; the mirror merged where the ensemble is unsure."""
    runner, both = predictor.runner, np.concatenate([x, x[..., ::-1]])
    probs = runner.gate_probs(both)  # type: ignore[attr-defined]
    if top_margin(probs[:1])[0] >= predictor.gate_margin:
        return log_probs(probs[:1])
    out = runner.rest(both, probs)[predictor.manifest.outputs[0]]  # type: ignore[attr-defined]
    unsure = np.flatnonzero(predictor.margins({predictor.manifest.outputs[0]: out[:1]}) < predictor.tta_margin)
    return average_rows(out[:1], unsure, out[1:][unsure], 1)


def needs(predictor: Predictor, x: np.ndarray) -> tuple[float, bool | None]:
    """A face's gate margin, and whether the ensemble's first pass then asks for the mirror (None: the gate
    answers)."""
    probs = predictor.runner.gate_probs(x)  # type: ignore[attr-defined]
    margin = float(top_margin(probs)[0])
    if margin >= predictor.gate_margin:
        return margin, None
    out = predictor.runner.rest(x, probs)  # type: ignore[attr-defined]
    return margin, bool(predictor.margins(out)[0] < predictor.tta_margin)


def by_margin(rows: list[tuple[float, bool | None]], edges: list[float]) -> list[dict]:
    """Faces the gate leaves, per gate-margin bin: how many, and the share the ensemble sends to the mirror pass."""
    out = []
    for lo, hi in itertools.pairwise(edges):
        got = [need for m, need in rows if need is not None and lo <= m < hi]
        out.append({"from": lo, "to": hi, "faces": len(got), "mirror_share": float(np.mean(got)) if got else None})
    return out


def timed(fn, *args) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - started) * 1000, out


def measure(args, model: Predictor, base: Predictor, faces) -> dict:
    """Every plan on every face (one face a call), interleaved face by face, ``rounds`` times."""
    cropper, spec = FaceCropper(), model.manifest.input
    thresholds = {f"ahead under {t:g}": t for t in args.thresholds}
    plans = ["fast", "paired (before)", *thresholds]
    ms: dict[str, list[float]] = {k: [] for k in plans}
    agree = {k: 0 for k in thresholds}
    worst = dict.fromkeys(thresholds, 0.0)

    def run(plan: str, image, box) -> np.ndarray:
        if plan == "fast":
            return base.infer(base.prepare([cropper.crop(image, box, base.manifest.input)])).probabilities
        prepared = model.prepare([cropper.crop(image, box, spec)])
        if plan == "paired (before)":
            return model.postprocess(
                {model.manifest.outputs[0]: paired_plan(model, prepared.x)}, prepared
            ).probabilities
        model.mirror_ahead = thresholds[plan]
        return model.infer(prepared).probabilities

    for r in range(args.rounds):
        for i, (image, box, _) in enumerate(tqdm(faces, desc=f"round {r + 1}", unit="face")):
            order = plans if (i + r) % 2 == 0 else plans[::-1]
            got = {}
            for plan in order:
                took, got[plan] = timed(run, plan, image, box)
                ms[plan].append(took)
            for plan in thresholds:
                agree[plan] += int(got[plan].argmax() == got["paired (before)"].argmax())
                worst[plan] = max(worst[plan], float(np.abs(got[plan] - got["paired (before)"]).max()))
    fast = statistics.fmean(ms["fast"])
    n = args.rounds * len(faces)
    return {
        plan: {
            "ms_per_face_mean": statistics.fmean(v),
            "ratio_to_fast": statistics.fmean(v) / fast,
            **({"labels_as_before": agree[plan] / n, "max_prob_diff": worst[plan]} if plan in thresholds else {}),
        }
        for plan, v in ms.items()
    }


def plot(bins: list[dict], cost: dict, path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    shown = [x for x in bins if x["faces"]]
    a.bar([f"{x['from']:.1f}" for x in shown], [x["mirror_share"] for x in shown], color="tab:blue")
    a.set(xlabel="gate margin (bin start)", ylabel="share sent to the mirror pass", ylim=(0, 1))
    a.set_title("Faces the gate leaves: who needs the mirror", fontsize=10)
    names = [k for k in cost if k != "fast"]
    b.barh(names, [cost[k]["ratio_to_fast"] for k in names], color="tab:orange")
    b.axvline(2.5, color="gray", linestyle="--", linewidth=1)
    b.set(xlabel="ms per photo face ÷ the fast model's (issue 32: at most 2.5)")
    b.set_title("Cost per lone face by plan", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(args: argparse.Namespace) -> dict:
    model = served_predictor(find_entry(args.model))
    if model.gate_margin is None or not model.tta or model.paired:
        raise SystemExit(f"{args.model} serves no gate with a mirror pass here: nothing to plan")
    base = served_predictor(find_entry(args.base))
    for predictor in (model, base):
        predictor.warmup()
    faces = photo_faces(model.labels)
    cropper = FaceCropper()
    rows = [
        needs(model, model.prepare([cropper.crop(i, b, model.manifest.input)]).x)
        for i, b, _ in tqdm(faces, desc="margins", unit="face")
    ]
    bins = by_margin(rows, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0])
    cost = measure(args, model, base, faces[: args.faces])
    gated = sum(need is None for _, need in rows)
    print(f"{len(rows)} photos' faces: the gate answers {gated}; of the rest, the ensemble sends to the mirror pass:")
    for x in bins:
        if x["faces"]:
            print(f"  gate margin {x['from']:.1f}-{x['to']:.1f}: {x['faces']:4d} faces, {x['mirror_share']:.0%}")
    for plan, c in cost.items():
        extra = (
            f"  labels as before {c['labels_as_before']:.4f}, max |dp| {c['max_prob_diff']:.4f}"
            if "ahead" in plan
            else ""
        )
        print(f"{plan:18s} {c['ms_per_face_mean']:6.2f} ms  x{c['ratio_to_fast']:.2f}{extra}")
    out = {"model": args.model, "faces_scored": len(rows), "gate_answers": gated, "bins": bins, "cost": cost}
    save_report(args.output, "mirror_ahead", out, lambda path: plot(bins, cost, path))
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
