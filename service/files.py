"""Small files written whole or not at all, shared by processes: job records, queue markers, the reload signal."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (a crash mid-write leaves the old)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
