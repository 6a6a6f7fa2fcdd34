"""Render the README's model table from measured figures: the manifest's val metrics and the real-photo report.

python -m benchmarks.model_card [--model NAME] [--photos runs/eval_photos/photos.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import add_model_argument, find_entry


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p)
    p.add_argument("--photos", type=Path, default=Path("runs/eval_photos/photos.json"))
    return p


def table(val: dict, photos: dict | None) -> str:
    head = "| class | FER2013 val recall | precision | F1 | n | real photos recall | n |\n|---|---|---|---|---|---|---|"
    rows = []
    for label, r in val["per_class"].items():
        p = (photos or {}).get("per_class", {}).get(label, {})
        photo = f"{p['recall']:.2f} | {p['support']}" if p.get("support") else "– | 0"
        rows.append(
            f"| {label} | {r['recall']:.2f} | {r['precision']:.2f} | {r['f1']:.2f} | {r['support']} | {photo} |"
        )
    overall = f"| **all** | **acc {val['accuracy']:.3f}, macro-F1 {val['macro_f1']:.3f}** | | | {val['samples']} |"
    if photos:
        overall += f" **acc {photos['accuracy']:.3f}, macro-F1 {photos['macro_f1']:.3f}** | {photos['samples']} |"
    else:
        overall += " | |"
    return "\n".join([head, *rows, overall])


def main(args: argparse.Namespace) -> str:
    entry = find_entry(args.model)
    photos = json.loads(args.photos.read_text()) if args.photos.is_file() else None
    text = table(entry.manifest.metrics["val"], photos)
    print(text)
    return text


if __name__ == "__main__":
    main(get_args_parser().parse_args())
