"""Combine face sets into one ``path,label,split,source`` manifest: ``python -m training.make_manifest``.

Training on several sets (FER2013 and RAF-DB, say) needs one list of files and one val split per set. A set with
its own val split keeps it; a set without one gets a stratified share held out (``--val-fraction``, seeded), so
every label is represented in val in its training proportion. Besides ``manifest.csv`` (all sets) it writes one
``<source>.csv`` per set, so ``training.evaluate --data OUT/<source>.csv --split val`` reports each set alone.
Paths are written relative to the output folder, so the folder can move with the data beside it.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from collections import defaultdict
from pathlib import Path

from training.data import Sample, available_splits, read_image_folder


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="NAME=ROOT",
        help="an ImageFolder tree (root/[train|val/]<label>/*); repeat for each set",
    )
    p.add_argument(
        "--repeat",
        action="append",
        default=[],
        metavar="NAME=K",
        help="list a set's training rows K times in manifest.csv (oversampling a smaller set); val rows once",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share for sets without a val split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, required=True, help="folder for manifest.csv and <source>.csv")
    return p


def parse_source(text: str) -> tuple[str, Path]:
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise SystemExit(f"--source {text!r}: expected NAME=ROOT, e.g. rafdb=../shared/data/rafdb")
    if not Path(root).is_dir():
        raise SystemExit(f"--source {text!r}: {root} is not a folder")
    return name, Path(root)


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> dict[str, list[Sample]]:
    """Hold out ``fraction`` of each label (at least one where a label has two or more samples)."""
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_label[sample.label].append(sample)
    rng = random.Random(seed)
    out: dict[str, list[Sample]] = {"train": [], "val": []}
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda s: s.path.name)
        rng.shuffle(group)
        n_val = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        out["val"] += group[:n_val]
        out["train"] += group[n_val:]
    return out


def split_source(root: Path, fraction: float, seed: int) -> dict[str, list[Sample]]:
    splits = available_splits(root)
    if {"train", "val"} <= splits:
        return {split: read_image_folder(root, split) for split in ("train", "val")}
    pool = read_image_folder(root, "train" if "train" in splits else None)
    return stratified_split(pool, fraction, seed)


def rows_for(name: str, splits: dict[str, list[Sample]], out_dir: Path) -> list[dict[str, str]]:
    return [
        {"path": os.path.relpath(s.path, out_dir), "label": s.label, "split": split, "source": name}
        for split, samples in splits.items()
        for s in samples
    ]


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split", "source"])
        writer.writeheader()
        writer.writerows(rows)


def parse_repeats(texts: list[str]) -> dict[str, int]:
    repeats = {}
    for text in texts:
        name, _, k = text.partition("=")
        if not k.isdigit() or int(k) < 1:
            raise SystemExit(f"--repeat {text!r}: expected NAME=K with K a whole number >= 1")
        repeats[name] = int(k)
    return repeats


def main(args: argparse.Namespace) -> list[dict[str, str]]:
    args.output.mkdir(parents=True, exist_ok=True)
    out_dir = args.output.resolve()
    repeats = parse_repeats(args.repeat)
    everything = []
    for text in args.source:
        name, root = parse_source(text)
        rows = rows_for(name, split_source(root.resolve(), args.val_fraction, args.seed), out_dir)
        write_csv(args.output / f"{name}.csv", rows)
        counts = {split: sum(r["split"] == split for r in rows) for split in ("train", "val")}
        print(f"{name}: {counts['train']} train, {counts['val']} val -> {args.output / f'{name}.csv'}")
        train_rows = [r for r in rows if r["split"] == "train"]
        everything += rows + train_rows * (repeats.get(name, 1) - 1)
    write_csv(args.output / "manifest.csv", everything)
    print(f"all: {len(everything)} rows -> {args.output / 'manifest.csv'}")
    return everything


if __name__ == "__main__":
    main(get_args_parser().parse_args())
