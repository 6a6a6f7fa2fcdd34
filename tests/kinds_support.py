"""Shared by the tests of the frame-attribute and feature-vector model kinds: the training commands run on generated
data with tiny models, their export and publish, and a clip of generated frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training import export_onnx, export_slim, publish, train
from training.synth import draw_frame, make_features, write_feature_csv

FEATURE_TRAIN = [
    *("--arch", "feature_mlp", "--arch-args", '{"hidden": 32}', "--epochs", "12", "--batch-size", "16"),
    *("--opt", "adamw", "--lr", "0.003", "--weight-decay", "0.01", "--warmup-epochs", "1", "--threads", "2"),
]
ATTRIBUTE_TRAIN = [
    *("--arch", "frame_mobilenet", "--arch-args", '{"width": 4}', "--input-size", "32", "--epochs", "4"),
    *("--batch-size", "16", "--opt", "adamw", "--lr", "0.005", "--warmup-epochs", "1", "--threads", "2"),
]


def run(module, *argv: str):
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


def feature_csv(path: Path, subjects: int = 2, rows_per_class: int = 40, seed: int = 1) -> Path:
    """A DEAP-like 167-column CSV, three classes, with a per-subject offset (training.synth)."""
    return write_feature_csv(path, *make_features("deap", subjects, rows_per_class, 3, seed=seed))


def train_and_export(data: Path, out: Path, args: list[str], *extra: str, torch_program: bool = False) -> Path:
    """``training.train`` then ``export_slim`` and ``export_onnx``: a run folder ready to publish."""
    run(train, "--data", data, "--output", out, *args, *extra)
    run(export_slim, "--run", out, *(["--torch-program"] if torch_program else []))
    _, diff = run(export_onnx, "--run", out)
    assert diff < 1e-4
    return out


def publish_run(run_dir: Path, store: Path, name: str, version: str = "1.0.0") -> Path:
    run(publish, "--run", run_dir, "--name", name, "--version", version, "--store", store)
    return store / name / version


def attribute_clip(path: Path, seconds: int = 3, fps: int = 10, size: int = 64) -> Path:
    """A clip whose first half is warm, second half cool and striped; a circle throughout."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    frames = seconds * fps
    for i in range(frames):
        flags = {"warm": i < frames // 2, "circle": True, "stripes": i >= frames // 2, "text": False}
        writer.write(draw_frame(flags, size, rng))
    writer.release()
    return path
