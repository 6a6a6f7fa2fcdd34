"""Issue 32's speed goals in one run: both models back to back on one machine, each benchmark in a fresh process,
the models' order alternating from round to round (a VM's speed drifts by tens of percent over minutes, so only
figures of one sitting compare).

Runs, in this order:
- ``bench_service --seconds S --concurrency 1 4 --model M [--workers N]``, ``--rounds`` times per model: the photo
  route's scaling and p50 against its stages, and the face-crop route against the raw model;
- ``bench_video --no-baseline`` with ``EMOTION_DEFAULT_MODEL=M``, ``--video-rounds`` times per model;
- the per-face cost over the shared photos' faces (``benchmarks.gate``'s timing: crop + preprocess + model, one face
  a call, the two models interleaved face by face), in this process.

Then prints every goal with each round's figure and whether it is met, and writes goals.json and goals.png (with
each benchmark's own JSON and output beside them). Accuracy, the other half of the per-face goal, is the
evaluation's (``training.evaluate``, ``benchmarks.eval_photos``); a candidate published to a scratch store is
measured here with ``EMOTION_STORE_PATH``.

    python -m benchmarks.goals [--rounds 2] [--video-rounds 3] [--faces 300] [--output runs/goals]
        [--workers 2] [--concurrency 1 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from benchmarks import pyplot, save_report

ROOT = Path(__file__).resolve().parents[1]
FAST, DEFAULT = "fast", "default"


@dataclass(frozen=True)
class Goal:
    """One of the issue's criteria: a figure per model and round, its bound, and how the rounds are judged."""

    key: str
    name: str
    unit: str
    bound: dict[str, float]  # per role ("fast", "default"); a role without a bound is shown, not judged
    at_most: bool  # the figure must stay at or under the bound (else at or over it)
    rule: str  # "every": every round within the bound; "median": the rounds' median


@dataclass
class Verdict:
    goal: Goal
    figures: dict[str, list[float]]  # per role, one per round
    met: bool | None  # None: nothing judged (no figures for a role with a bound)

    def judged(self, role: str) -> float | None:
        """The figure judged: the rounds' median, or (every round) the worst of them."""
        values = self.figures.get(role) or []
        if not values:
            return None
        if self.goal.rule == "median":
            return statistics.median(values)
        return max(values) if self.goal.at_most else min(values)


HTTP_RAW = {FAST: 0.85, DEFAULT: 0.85}  # both models' face crops over HTTP against the model alone
GOALS = (
    Goal("photos_per_face", "per face over the photos' faces, ÷ fast", "x", {DEFAULT: 2.5}, at_most=True, rule="every"),
    Goal("one_face", "per face, stages' one face, ÷ fast", "x", {}, at_most=True, rule="every"),
    Goal("image_scaling", "/predict/image req/s c=4 ÷ c=1", "x", {DEFAULT: 1.4}, at_most=False, rule="every"),
    Goal("image_p50", "/predict/image p50 c=1 ÷ its stages", "x", {DEFAULT: 1.15}, at_most=True, rule="every"),
    Goal("image_p50_seq", "… ÷ its stages in sequence (diagnosis)", "x", {}, at_most=True, rule="every"),
    Goal("face_multipart", "/predict/face HTTP ÷ raw, multipart", "", HTTP_RAW, at_most=False, rule="every"),
    Goal("face_raw_body", "/predict/face HTTP ÷ raw, raw body", "", HTTP_RAW, at_most=False, rule="every"),
    Goal("video", "bench_video, real time", "x", {FAST: 45.0, DEFAULT: 30.0}, at_most=False, rule="median"),
    Goal("decoder", "decoder alone (the video's ceiling)", "x", {}, at_most=False, rule="median"),
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", default="fer_emotion_cnn", help="the fast model, the per-face and HTTP yardstick")
    p.add_argument("--default", default="emotion_transfer", help="the accurate default")
    p.add_argument("--rounds", type=int, default=2, help="bench_service runs per model")
    p.add_argument("--video-rounds", type=int, default=3, help="bench_video runs per model (the goal is the median)")
    p.add_argument("--seconds", type=float, default=4.0, help="bench_service's seconds per scenario")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4], help="bench_service's callers (1 and 4 are judged)"
    )
    p.add_argument("--workers", type=int, default=1, help="server processes for bench_service")
    p.add_argument("--faces", type=int, default=300, help="photos' faces timed per model")
    p.add_argument("--output", type=Path, default=Path("runs/goals"))
    return p


def measure(role_models: dict[str, str], args: argparse.Namespace) -> dict:
    """Every benchmark run of the sitting, by kind and role, in the order they ran."""
    out: dict = {"service": {r: [] for r in role_models}, "video": {r: [] for r in role_models}}
    steps = [("service", i) for i in range(args.rounds)] + [("video", i) for i in range(args.video_rounds)]
    with tqdm(total=len(steps) * len(role_models) + 1, desc="goals", unit="run") as bar:
        for kind, i in steps:
            order = list(role_models) if i % 2 == 0 else list(role_models)[::-1]
            for role in order:
                bar.set_postfix_str(f"{kind} {role} {i + 1}")
                folder = args.output / f"{kind}_{role}_{i + 1}"
                out[kind][role].append(run_benchmark(kind, role_models[role], folder, args))
                bar.update()
        bar.set_postfix_str("per face")
        out["per_face"] = per_face_cost(role_models, args.faces)
        bar.update()
    return out


def run_benchmark(kind: str, model: str, folder: Path, args: argparse.Namespace) -> dict:
    """One benchmark in a fresh process; its output kept in ``folder``/output.txt, its JSON returned."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if kind == "service":
        found = folder / "bench_service.json"
        argv = ["bench_service", "--seconds", str(args.seconds), "--model", model, "--workers", str(args.workers)]
        argv += ["--concurrency", *map(str, args.concurrency), "--output", str(folder)]
    else:
        found = folder / "bench_video.json"
        argv = ["bench_video", "--no-baseline", "--json", str(found)]
        env["EMOTION_DEFAULT_MODEL"] = model
    with (folder / "output.txt").open("w") as log:
        subprocess.run(
            [sys.executable, "-m", f"benchmarks.{argv[0]}", *argv[1:]],
            check=True,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return json.loads(found.read_text())


def per_face_cost(role_models: dict[str, str], faces: int) -> dict:
    """Crop + preprocess + model per photo face, one face a call, the models interleaved face by face."""
    from benchmarks import find_entry, served_predictor
    from benchmarks.gate import photo_faces, timing

    runs = {role: served_predictor(find_entry(role_models[role])) for role in (FAST, DEFAULT)}
    for predictor in runs.values():
        predictor.warmup()
    return timing(runs, photo_faces(runs[DEFAULT].labels), faces)


def figures(results: dict) -> dict[str, dict[str, list[float]]]:
    """Each goal's figures per role and round, from the benchmarks' JSON."""
    service, video = results["service"], results["video"]

    def each(role: str, f: Callable[[dict], float]) -> list[float]:
        return [f(r) for r in service.get(role, [])]

    one_face = [
        d["stages_ms"]["per_face_ms"] / f["stages_ms"]["per_face_ms"]
        for f, d in zip(service.get(FAST, []), service.get(DEFAULT, []), strict=False)
    ]
    photos = results.get("per_face", {}).get(DEFAULT, {}).get("ratio_to_base")
    roles = list(service)
    return {
        "photos_per_face": {DEFAULT: [] if photos is None else [photos]},
        "one_face": {DEFAULT: one_face},
        "image_scaling": {
            r: each(r, lambda x: x["image_640x480_c4"]["rps"] / x["image_640x480_c1"]["rps"]) for r in roles
        },
        "image_p50": {
            r: each(r, lambda x: x["image_640x480_c1"]["p50_ms"] / x["stages_ms"]["image"]["total"]) for r in roles
        },
        "image_p50_seq": {r: each(r, p50_in_sequence) for r in roles},
        "face_multipart": {r: each(r, lambda x: x["ratio"]) for r in roles},
        "face_raw_body": {r: each(r, lambda x: x["ratio_raw_body"]) for r in roles},
        "video": {r: [v["realtime_factor"] for v in video.get(r, [])] for r in video},
        "decoder": {r: [v["decoder_ceiling"] for v in video.get(r, [])] for r in video},
    }


def p50_in_sequence(run: dict) -> float:
    """The photo's p50 at c=1 over its stages timed as a request runs them (``benchmarks.stages``): what is left
    is the web layer and the thread hops, without the caches' share (nan from runs before that figure existed)."""
    seq = run["stages_ms"].get("image_in_sequence")
    return run["image_640x480_c1"]["p50_ms"] / seq["total"] if seq else float("nan")


def verdicts(results: dict) -> list[Verdict]:
    """Each goal judged on this sitting's figures: met only where every bounded role has figures within bound."""
    found, out = figures(results), []
    for goal in GOALS:
        v = Verdict(goal, found[goal.key], None)
        judged = [(v.judged(role), bound) for role, bound in goal.bound.items()]
        if judged and all(x is not None for x, _ in judged):
            v.met = all((x <= b) if goal.at_most else (x >= b) for x, b in judged)  # type: ignore[operator]
        out.append(v)
    return out


def table(rows: list[Verdict], role_models: dict[str, str]) -> str:
    """The goals as a Markdown table: each round's figure per model, the bound, and the verdict."""
    lines = [
        f"| goal | {role_models[FAST]} (fast) | {role_models[DEFAULT]} (default) | bound | met? |",
        "|---|---|---|---|---|",
    ]
    for v in rows:
        g = v.goal
        cells = [", ".join(f"{x:.2f}{g.unit}" for x in v.figures.get(role, [])) or "–" for role in (FAST, DEFAULT)]
        sign = "≤" if g.at_most else "≥"
        bound = "; ".join(f"{role} {sign} {b:g}{g.unit}" for role, b in g.bound.items()) or "shown"
        if g.bound and g.rule == "median":
            bound += " (median)"
        met = "–" if v.met is None else "yes" if v.met else "no"
        lines.append(f"| {g.name} | {cells[0]} | {cells[1]} | {bound} | {met} |")
    return "\n".join(lines)


def plot(rows: list[Verdict], path: Path) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, axes = plt.subplots(3, 3, figsize=(15, 10))
    for ax, v in zip(axes.flat, rows, strict=True):
        for k, (role, colour) in enumerate(((FAST, "#4a7fb0"), (DEFAULT, "#c0504d"))):
            values = v.figures.get(role, [])
            ax.scatter([k] * len(values), values, color=colour, zorder=3)
            if role in v.goal.bound:
                ax.hlines(v.goal.bound[role], k - 0.3, k + 0.3, colors=colour, linestyles="--")
        ax.set_xticks([0, 1], [FAST, DEFAULT])
        ax.set_xlim(-0.6, 1.6)
        verdict = "" if v.met is None else " — met" if v.met else " — not met"
        ax.set_title(f"{v.goal.name}{verdict}", fontsize=8)
    fig.suptitle("Issue 32's goals in one sitting (dots: rounds; dashes: bounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def host() -> str:
    """The CPU model and core count, which every figure of a sitting depends on."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} cores"


def main(args: argparse.Namespace) -> dict:
    role_models = {FAST: args.fast, DEFAULT: args.default}
    results = measure(role_models, args)
    rows, machine = verdicts(results), host()
    print(f"{machine}\n{table(rows, role_models)}")
    report = {
        "host": machine,
        "models": role_models,
        "goals": [{**asdict(v.goal), "figures": v.figures, "met": v.met} for v in rows],
        "per_face": results["per_face"],
    }
    save_report(args.output, "goals", report, lambda path: plot(rows, path))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
