"""Benchmarks and evaluations (``python -m benchmarks.<name>``): they run with the service's settings from the
environment, so two configurations compare back to back."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from model_store import Predictor, StoreEntry, find
from service.config import Settings


def service_settings() -> Settings:
    """The settings the service would read from this environment (``EMOTION_*``; no ``.env`` file)."""
    return Settings(_env_file=None)


def find_entry(name: str, version: str | None = None) -> StoreEntry:
    """A store entry from the store the service would serve (``EMOTION_STORE_PATH``), so a candidate published to a
    scratch store is measured as the service would run it."""
    return find(name, version, root=service_settings().store_path)


def served_predictor(entry: StoreEntry, settings: Settings | None = None) -> Predictor:
    """The entry as the service runs it (``settings``, default the environment's): its backend, runtime threads and
    mirror TTA (``tta``, ``tta_margin``) and gate (``gate``)."""
    s = settings or service_settings()
    return Predictor.load(
        entry,
        s.backend,
        threads=s.inference_threads,
        tta=s.tta,
        tta_margin=s.tta_margin,
        gate=s.gate,
        int8_weights=s.int8_weights,
    )


def add_model_argument(p: argparse.ArgumentParser) -> None:
    """``--model``, defaulting to the model the service serves when a request names none."""
    p.add_argument(
        "--model", default=service_settings().default_model, help="default: the service's (EMOTION_DEFAULT_MODEL)"
    )


def pyplot(path: Path) -> ModuleType | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None (with a notice that ``path`` is not written)
    where matplotlib is not installed: the figures' JSON is written either way."""
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {path.name} not written (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_report(folder: Path, name: str, data: Any, plot: Callable[[Path], None] | None = None) -> Path:
    """``name``.json in ``folder`` (made if need be) and, with ``plot``, ``name``.png drawn by it; the JSON's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    if plot is not None:
        plot(folder / f"{name}.png")
    return path


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) a local process and its children (a server's worker processes) have
    used so far, from ``/proc``; None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu_s(int(child)) or 0.0 for child in children)
