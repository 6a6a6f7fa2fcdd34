"""The server processes of one ``python -m service --workers N`` following each other's store rescans: a
``POST /models/reload`` reaches one of them, which then writes a new token into a file that every process checks
once a second (``ModelRegistry`` rescans when it changed). A token, not the file's time: two rescans within the
file system's clock tick would look like one."""

from __future__ import annotations

import secrets
from pathlib import Path

from service.files import atomic_write

POLL_S = 1.0  # how often a process looks for its peers' rescans


class ReloadSignal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = self._read()

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None

    def announce(self) -> None:
        """This process rescanned the store: the others are to follow."""
        self.seen = secrets.token_hex(8)
        atomic_write(self.path, self.seen)

    def changed(self) -> bool:
        """Whether another process announced a rescan since this one last looked (or announced one itself)."""
        token = self._read()
        if token == self.seen:
            return False
        self.seen = token
        return True
