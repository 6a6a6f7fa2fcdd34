"""Reproduce a shipped model from the data sets: ``python -m training.recipe NAME [--smoke] [--print]``.

A recipe is data (``training.recipes``): the steps that made one shipped version, each the command line of a
``python -m training.X`` module with its inputs and outputs named inside a work folder (``--work``) and the store it
publishes into (``--store``). Run in order; a step whose outputs exist and that ran with the same command line (a
stamp in ``<work>/.done/``) is skipped, so a stopped run continues where it stopped. ``--print`` writes the commands a
full run executes, one shell line each, and runs nothing. ``--smoke`` runs the same steps on a few hundred faces
linked from ``--data`` (``<work>/smoke_data``) with one short epoch each, to check the chain end to end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from training.recipes import RECIPES, Recipe, Step

log = logging.getLogger("training.recipe")
REPO = Path(__file__).resolve().parents[1]
SMOKE_PER_LABEL = {"train": 20, "val": 6}  # faces per label and split linked into the smoke data


def default_data() -> str:
    """``../shared/data`` beside the checkout, written relative to the working directory where it can be."""
    return os.path.relpath(REPO.parent / "shared" / "data")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help=f"the shipped model: {', '.join(RECIPES)}")
    p.add_argument("--data", type=Path, help="the data sets' folder (default: ../shared/data beside the checkout)")
    p.add_argument("--work", type=Path, help="folder for manifests, runs and member entries (default: runs/NAME)")
    p.add_argument("--store", type=Path, default=Path("runs/store"), help="the store the model is published into")
    p.add_argument("--print", action="store_true", dest="print_only", help="print the commands, run nothing")
    p.add_argument("--smoke", action="store_true", help="a few hundred faces, one short epoch a stage")
    return p


def places(args: argparse.Namespace) -> dict[str, str]:
    """The values of a step's ``{data}``, ``{work}`` and ``{store}``; smoke runs read the linked subset."""
    work = args.work or Path("runs") / args.name
    data = work / "smoke_data" if args.smoke else args.data or Path(default_data())
    return {"data": str(data), "work": str(work), "store": str(args.store)}


def fill(text: str, where: dict[str, str]) -> str:
    for key, value in where.items():
        text = text.replace("{" + key + "}", value)
    return text


def argv(step: Step, where: dict[str, str], smoke: bool) -> list[str]:
    """The step's command line; in smoke mode with its smoke arguments last (argparse keeps the last value)."""
    words = ["python", "-m", step.module, *step.args, *(step.smoke if smoke else ())]
    return [fill(w, where) for w in words]


def shell_line(words: list[str]) -> str:
    return " ".join(quote(w) for w in words)


def quote(word: str) -> str:
    """``shlex.quote``, but a word whose only awkward character is an apostrophe goes in double quotes."""
    if "'" in word and not set(word) & set('"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def render(recipe: Recipe, where: dict[str, str], smoke: bool) -> str:
    """What ``--print`` writes: a comment per step and its command, one line each."""
    lines = [f"# {recipe.name} {recipe.version}: {recipe.about}"]
    lines += [f"# {line}" for line in recipe.notes]
    lines += [f"# needs {fill(n, where)}" for n in recipe.needs]
    for step in recipe.steps:
        lines += [f"# {step.name}: {step.about}", shell_line(argv(step, where, smoke))]
    return "\n".join(lines) + "\n"


def link_smoke_data(source: Path, dest: Path) -> Path:
    """A few faces per label of each set and split under ``source`` (``<set>/<split>/<label>/*``), linked, not
    copied, into ``dest`` in the same layout: the first files by name, so every smoke run reads the same ones."""
    sets = [d for d in sorted(source.iterdir()) if d.is_dir() and (d / "train").is_dir()] if source.is_dir() else []
    if not sets:
        raise SystemExit(f"--data {source}: no <set>/train/<label>/ folders there (expected ../shared/data)")
    for folder in sets:
        for split, per_label in SMOKE_PER_LABEL.items():
            for label in sorted(p for p in (folder / split).glob("*") if p.is_dir()):
                target = dest / folder.name / split / label.name
                target.mkdir(parents=True, exist_ok=True)
                for image in sorted(label.iterdir())[:per_label]:
                    link = target / image.name
                    if not link.exists():
                        link.symlink_to(image.resolve())
    return dest


def stamp(step: Step, where: dict[str, str]) -> Path:
    return Path(where["work"]) / ".done" / step.name


def is_done(step: Step, where: dict[str, str], line: str) -> bool:
    """Its outputs exist and it last ran with this very command line."""
    mark = stamp(step, where)
    outputs = [Path(fill(o, where)) for o in step.outputs]
    return mark.is_file() and mark.read_text() == line and all(o.exists() for o in outputs)


def check_needs(recipe: Recipe, where: dict[str, str]) -> None:
    missing = [fill(n, where) for n in recipe.needs if not Path(fill(n, where)).exists()]
    if missing:
        raise SystemExit(f"recipe {recipe.name} needs {', '.join(missing)}: {recipe.needs_hint}")


def run_step(step: Step, where: dict[str, str], smoke: bool) -> None:
    words = argv(step, where, smoke)
    line = shell_line(words)
    if is_done(step, where, line):
        log.info("skip %s (done: %s)", step.name, ", ".join(fill(o, where) for o in step.outputs))
        return
    log.info("run %s: %s", step.name, line)
    started = time.monotonic()
    result = subprocess.run([sys.executable, *words[1:]], check=False)
    if result.returncode != 0:
        raise SystemExit(f"recipe step {step.name} failed (exit status {result.returncode}): {line}")
    missing = [fill(o, where) for o in step.outputs if not Path(fill(o, where)).exists()]
    if missing:
        raise SystemExit(f"recipe step {step.name} finished without writing {', '.join(missing)}: {line}")
    mark = stamp(step, where)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(line)
    log.info("done %s in %.0f s", step.name, time.monotonic() - started)


def main(args: argparse.Namespace) -> str:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.name not in RECIPES:
        raise SystemExit(f"no recipe {args.name!r}: one of {', '.join(RECIPES)}")
    recipe = RECIPES[args.name]
    where = places(args)
    text = render(recipe, where, args.smoke)
    if args.print_only:
        sys.stdout.write(text)
        return text
    if recipe.imported:
        raise SystemExit(f"{recipe.name} {recipe.version} has no training recipe: {recipe.about}")
    if args.smoke:
        link_smoke_data(args.data or Path(default_data()), Path(where["data"]))
    check_needs(recipe, where)
    for step in recipe.steps:
        run_step(step, where, args.smoke)
    log.info("recipe %s %s: published into %s", recipe.name, recipe.version, where["store"])
    return text


if __name__ == "__main__":
    main(get_args_parser().parse_args())
