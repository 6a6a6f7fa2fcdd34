"""Generated data sets for the models no public data set may be shipped for.

``python -m training.synth features --layout deap --subjects 4 --rows-per-class 60 --output eeg.csv`` writes a
feature CSV in the layout of seed 001: DEAP-like (167 values: log band power of 32 channels x 5 bands, 3 frontal
alpha asymmetries, 4 summary statistics; 5 classes) or SEED-like (310 values: differential entropy of 62 channels
x 5 bands; 3 classes). The public EEG sets (DEAP, SEED, MAHNOB-HCI) forbid redistribution, so this stands in for
them with their structure: a 1/f band-power profile, channel-specific levels, a class effect on some bands and
regions, a per-subject offset on every feature (larger than the class effect, as between real people) and noise.
A model trained on some subjects meets a new one shifted, which is what per-person fine-tuning fixes.

``python -m training.synth frames --count 240 --output frames/`` writes PNG frames and ``attributes.csv``
(``path,warm,circle,stripes,text,split``): attributes drawn into the frame, so they are learnable from pixels.

Neither carries real signal: they exercise training, personalisation and serving end to end.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


DEAP_CHANNELS = _names(
    "Fp1 AF3 F3 F7 FC5 FC1 C3 T7 CP5 CP1 P3 P7 PO3 O1 Oz Pz Fp2 AF4 Fz F4 F8 FC6 FC2 Cz C4 T8 CP6 CP2 P4 P8 PO4 O2"
)
DEAP_BANDS = ("theta", "slow_alpha", "alpha", "beta", "gamma")
DEAP_ASYMMETRY = (("F4", "F3"), ("F8", "F7"), ("AF4", "AF3"))  # right minus left alpha power
DEAP_STATS = ("mean", "std", "skew", "kurtosis")  # of the row's band powers
SEED_CHANNELS = _names(
    "FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 T7 C5 C3 C1 CZ C2 C4 C6 "
    "T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 P6 P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2 CB2"
)
SEED_BANDS = ("delta", "theta", "alpha", "beta", "gamma")
LAYOUTS = {
    "deap": {"channels": DEAP_CHANNELS, "bands": DEAP_BANDS, "labels": ("happy", "calm", "sad", "angry", "neutral")},
    "seed": {"channels": SEED_CHANNELS, "bands": SEED_BANDS, "labels": ("negative", "neutral", "positive")},
}
BAND_LEVEL = np.array([2.0, 1.5, 1.2, 0.6, 0.2])  # 1/f: lower bands carry more power (log scale)
FRAME_ATTRIBUTES = ("warm", "circle", "stripes", "text")


def feature_columns(layout: str) -> list[str]:
    """The column names of a layout, in order: ``<channel>_<band>`` (then asymmetries and statistics for DEAP)."""
    spec = LAYOUTS[layout]
    names = [f"{c}_{b}" for c in spec["channels"] for b in spec["bands"]]
    if layout == "deap":
        names += [f"faa_{r}_{left}" for r, left in DEAP_ASYMMETRY] + [f"stat_{s}" for s in DEAP_STATS]
    return names


def _band_powers(layout: str, classes: int, subjects: int, rows: int, rng, shift: float, effect: float, noise: float):
    """``(values S x K x R x C x B, class patterns)``: every row's band powers, per subject and class."""
    spec = LAYOUTS[layout]
    c, b = len(spec["channels"]), len(spec["bands"])
    base = BAND_LEVEL[None, :] + rng.normal(0, 0.3, (c, 1))  # channel levels
    patterns = rng.normal(0, 1, (classes, c, b)) * (rng.random((classes, c, b)) < 0.35)  # sparse class effects
    out = np.empty((subjects, classes, rows, c, b), np.float32)
    for s in range(subjects):
        # this person's head, skin and electrodes, and a resting state that looks like some of the classes
        offset = rng.normal(0, shift, (c, b)) + effect * np.tensordot(rng.normal(0, 1.0, classes), patterns, 1)
        warp = 1.0 + rng.normal(0, 0.25, (classes, 1, 1))  # and how strongly they show each state
        for k in range(classes):
            mean = base + offset + effect * warp[k] * patterns[k]
            out[s, k] = mean + rng.normal(0, noise, (rows, c, b))
    return out


def _deap_extras(powers: np.ndarray) -> np.ndarray:
    """Frontal alpha asymmetries and summary statistics of rows ``N x C x B`` -> ``N x 7``."""
    alpha = powers[:, :, DEAP_BANDS.index("alpha")]
    index = {name: i for i, name in enumerate(DEAP_CHANNELS)}
    faa = np.stack([alpha[:, index[r]] - alpha[:, index[left]] for r, left in DEAP_ASYMMETRY], axis=1)
    flat = powers.reshape(len(powers), -1)
    mean, std = flat.mean(1), flat.std(1) + 1e-6
    z = (flat - mean[:, None]) / std[:, None]
    return np.column_stack([faa, mean, std, (z**3).mean(1), (z**4).mean(1) - 3])


def make_features(
    layout: str = "deap",
    subjects: int = 4,
    rows_per_class: int = 60,
    classes: int | None = None,
    seed: int = 0,
    subject_shift: float = 0.6,
    class_effect: float = 0.3,
    noise: float = 0.6,
) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """``(columns, values N x L, labels, subjects)``: ``rows_per_class`` rows of every class for every subject."""
    spec = LAYOUTS[layout]
    classes = classes or len(spec["labels"])
    if not 2 <= classes <= len(spec["labels"]):
        raise ValueError(f"{layout} has 2 to {len(spec['labels'])} classes")
    rng = np.random.default_rng(seed)
    powers = _band_powers(layout, classes, subjects, rows_per_class, rng, subject_shift, class_effect, noise)
    rows = powers.reshape(-1, *powers.shape[3:])
    values = rows.reshape(len(rows), -1)
    if layout == "deap":
        values = np.column_stack([values, _deap_extras(rows)])
    labels = [spec["labels"][k] for _ in range(subjects) for k in range(classes) for _ in range(rows_per_class)]
    people = [f"s{s + 1:02d}" for s in range(subjects) for _ in range(classes * rows_per_class)]
    return feature_columns(layout), values.astype(np.float32), labels, people


def write_feature_csv(path: Path, columns, values: np.ndarray, labels, subjects) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "subject", *columns])
        for label, subject, row in zip(labels, subjects, values, strict=True):
            writer.writerow([label, subject, *(f"{v:.5f}" for v in row)])
    return path


def draw_frame(flags: dict[str, bool], size: int, rng) -> np.ndarray:
    """A BGR frame showing the attributes that are on: a warm or cool background, a circle, stripes, text."""
    warm = (40, 90, 200) if flags["warm"] else (190, 120, 50)
    frame = np.clip(np.array(warm, np.float32) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    if flags["stripes"]:
        for x in range(0, size, max(4, size // 8)):
            cv2.line(frame, (x, 0), (x, size), (240, 240, 240), max(1, size // 32))
    if flags["circle"]:
        r = int(rng.integers(size // 8, size // 4))
        centre = tuple(int(v) for v in rng.integers(r, size - r, 2))
        cv2.circle(frame, centre, r, (30, 220, 30), -1)
    if flags["text"]:
        org = (int(rng.integers(0, size // 4)), int(rng.integers(size // 2, size - 4)))
        cv2.putText(frame, "ABC", org, cv2.FONT_HERSHEY_SIMPLEX, size / 96, (255, 255, 255), max(1, size // 48))
    return frame


def make_frames(folder: Path, count: int = 240, size: int = 96, val_fraction: float = 0.25, seed: int = 0) -> Path:
    """``count`` frames with random attributes (each on in about 40% of frames) and their ``attributes.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in tqdm(range(count), desc="frames", unit="frame", leave=False):
        flags = {a: bool(rng.random() < 0.4) for a in FRAME_ATTRIBUTES}
        name = f"frame_{i:05d}.png"
        cv2.imwrite(str(folder / name), draw_frame(flags, size, rng))
        split = "val" if i < round(val_fraction * count) else "train"
        rows.append([name, *(int(flags[a]) for a in FRAME_ATTRIBUTES), split])
    csv_path = folder / "attributes.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *FRAME_ATTRIBUTES, "split"])
        writer.writerows(rows)
    return csv_path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    f = sub.add_parser("features", help="an EEG-like feature CSV")
    f.add_argument("--layout", choices=sorted(LAYOUTS), default="deap")
    f.add_argument("--subjects", type=int, default=4)
    f.add_argument("--rows-per-class", type=int, default=60)
    f.add_argument("--classes", type=int, help="default: the layout's (5 for deap, 3 for seed)")
    f.add_argument("--subject-shift", type=float, default=0.6, help="spread of the per-subject offsets")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--output", type=Path, required=True)
    g = sub.add_parser("frames", help="PNG frames with attributes and their CSV")
    g.add_argument("--count", type=int, default=240)
    g.add_argument("--size", type=int, default=96)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--output", type=Path, required=True)
    return p


def main(args: argparse.Namespace) -> Path:
    if args.kind == "frames":
        path = make_frames(args.output, args.count, args.size, seed=args.seed)
    else:
        table = make_features(
            args.layout, args.subjects, args.rows_per_class, args.classes, args.seed, args.subject_shift
        )
        path = write_feature_csv(args.output, *table)
    print(path)
    return path


if __name__ == "__main__":
    main(get_args_parser().parse_args())
