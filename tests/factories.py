"""Small in-memory objects several test files build."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from model_store import Manifest, find

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def manifest(labels: list[str] | None = None, **overrides) -> Manifest:
    """A valid face-classification manifest (no files), with ``overrides`` applied."""
    fields = {
        "name": "m",
        "version": "1.0.0",
        "task": "face-classification",
        "architecture": "emotion_cnn",
        "labels": labels or FER_LABELS,
        "input": {"height": 48, "width": 48},
    }
    return Manifest(**{**fields, **overrides})


def broken_entry(store: Path, suffix: str = ".onnx") -> Path:
    """``fer_emotion_cnn`` copied into ``store`` as the entry ``broken``, its graphs ending in ``suffix`` cut to their
    first 1,000 bytes with matching checksums: files that pass the store's checks but no parser. Its folder."""
    src = find("fer_emotion_cnn").folder
    broken = store / "broken" / src.name
    shutil.copytree(src, broken)
    spec_file = broken / "manifest.json"
    manifest_data = json.loads(spec_file.read_text())
    for spec in manifest_data["files"]:
        if spec["path"].endswith(suffix):
            data = (broken / spec["path"]).read_bytes()[:1000]
            (broken / spec["path"]).write_bytes(data)
            spec["bytes"], spec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    spec_file.write_text(json.dumps({**manifest_data, "name": "broken"}))
    return broken
