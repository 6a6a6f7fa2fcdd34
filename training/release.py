"""Ship a finished run in one command: ``python -m training.release RUN --name N --version V [--store DIR]``.

Chains the four steps every shipped model went through, each by its own module's parser and ``main()``:
``export_slim`` (``model.safetensors``, ``--half``, ``--torch-program``) -> ``export_onnx`` (``model.onnx``,
parity-checked) -> ``publish`` (the store entry and its manifest) -> ``quantize`` (``model.int8.onnx``, calibrated on
the run's training data unless ``--calibration-data`` says otherwise; ``--quantize none`` skips it). A step that fails
stops the chain with its name and the reason; what the earlier steps wrote stays, so a fixed run can be released again
(``--overwrite`` replaces an entry the failed attempt already published).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from model_store import DEFAULT_ROOT
from training import export_onnx, export_slim, publish, quantize
from training.evaluate import tta_margin
from training.runs import load_config

log = logging.getLogger("training.release")
STEPS = ("export_slim", "export_onnx", "publish", "quantize")


class ReleaseError(RuntimeError):
    """A step of the chain failed; the message names the step and says why."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", type=Path, help="a finished training or ensemble run folder (config.json, best.pt)")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--description", default="")
    p.add_argument("--half", action="store_true", help="export_slim --half: kernels and weight matrices in float16")
    p.add_argument("--torch-program", action="store_true", help="export_slim --torch-program: model.pt2 as well")
    p.add_argument("--face-margin", type=float, help="publish --face-margin: the crop margin the service cuts")
    p.add_argument("--framing", choices=["box", "chip"], help="publish --framing")
    p.add_argument("--edge", choices=["clip", "replicate"], help="publish --edge")
    p.add_argument("--logit-bias", type=Path, help="publish --logit-bias")
    p.add_argument("--tta-margin", type=tta_margin, help="publish --tta-margin")
    p.add_argument("--gate-output", help="publish --gate-output")
    p.add_argument("--gate-margin", type=float, help="publish --gate-margin")
    p.add_argument("--valence-arousal", choices=["derived", "predicted", "none"], help="publish --valence-arousal")
    p.add_argument(
        "--quantize",
        choices=["percentile", "minmax", "none"],
        default="percentile",
        help="int8 calibration method (a colour-routed ensemble needs minmax); none: no model.int8.onnx",
    )
    p.add_argument("--calibration-data", type=Path, help="quantize --data (default: the run's training data)")
    p.add_argument("--calibration-samples", type=int, default=512, help="quantize --samples")
    p.add_argument("--check-samples", type=int, default=1000, help="quantize --check-samples")
    p.add_argument("--overwrite", action="store_true", help="replace an entry already in the store")
    return p


def step_argvs(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each step's command line, in order; ``quantize`` only when asked for."""
    run = str(args.run)
    slim = ["--run", run] + ["--half"] * args.half + ["--torch-program"] * args.torch_program
    pub = ["--run", run, "--name", args.name, "--version", args.version, "--store", str(args.store)]
    pub += ["--description", args.description] if args.description else []
    for flag, value in (
        ("--face-margin", args.face_margin),
        ("--framing", args.framing),
        ("--edge", args.edge),
        ("--logit-bias", args.logit_bias),
        ("--tta-margin", args.tta_margin),
        ("--gate-output", args.gate_output),
        ("--gate-margin", args.gate_margin),
        ("--valence-arousal", args.valence_arousal),
    ):
        pub += [flag, str(value)] if value is not None else []
    pub += ["--overwrite"] * args.overwrite
    argvs = {"export_slim": slim, "export_onnx": ["--run", run], "publish": pub}
    if args.quantize != "none":
        data = args.calibration_data or load_config(args.run)["args"]["data"]
        argvs["quantize"] = [
            "--model",
            str(args.store / args.name / args.version),
            "--data",
            str(data),
            "--method",
            args.quantize,
            "--samples",
            str(args.calibration_samples),
            "--check-samples",
            str(args.check_samples),
        ]
    return argvs


def run_step(name: str, argv: list[str]) -> object:
    """One step through its module's own parser and ``main()``; any failure becomes a ``ReleaseError``."""
    module = {"export_slim": export_slim, "export_onnx": export_onnx, "publish": publish, "quantize": quantize}[name]
    main: Callable = module.main
    try:
        return main(module.get_args_parser().parse_args(argv))
    except SystemExit as exc:  # the modules stop with a message (argparse with a status code)
        reason = exc.code if isinstance(exc.code, str) else f"exit status {exc.code}"
        raise ReleaseError(f"{name} failed: {reason}") from None
    except Exception as exc:
        raise ReleaseError(f"{name} failed: {type(exc).__name__}: {exc}") from exc


def release(args: argparse.Namespace) -> Path:
    """Run the chain; returns the published store folder."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not (args.run / "config.json").is_file():
        raise ReleaseError(f"{args.run} is not a run folder (no config.json): train it or build the ensemble first")
    argvs = step_argvs(args)
    with tqdm(argvs.items(), total=len(argvs), desc=f"release {args.name}:{args.version}", unit="step") as bar:
        for name, argv in bar:
            bar.set_postfix_str(name)
            log.info("release step %s: python -m training.%s %s", name, name, " ".join(argv))
            run_step(name, argv)
    folder = args.store / args.name / args.version
    log.info("released %s:%s -> %s", args.name, args.version, folder)
    return folder


def main(args: argparse.Namespace) -> Path:
    try:
        return release(args)
    except ReleaseError as exc:
        raise SystemExit(f"training.release {args.name}:{args.version}: {exc}") from None


if __name__ == "__main__":
    main(get_args_parser().parse_args())
