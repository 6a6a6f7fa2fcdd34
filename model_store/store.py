"""Reading and writing the store: ``<root>/<name>/<version>/manifest.json`` plus its files, and the weights files of
other entries in the same store that an entry links (``Manifest.links``) instead of holding a copy."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from model_store.manifest import MANIFEST_NAME, FileEntry, FileRole, LinkedFile, Manifest

log = logging.getLogger(__name__)
DEFAULT_ROOT = Path(__file__).resolve().parent


class StoreError(Exception):
    """A manifest or artifact in the store is missing, invalid or does not match its checksum."""


@dataclass(frozen=True)
class StoreEntry:
    """A manifest and the folder it lives in."""

    manifest: Manifest
    folder: Path

    def path(self, role: FileRole) -> Path:
        entry = self.manifest.file(role)
        if entry is None:
            raise StoreError(f"{self.manifest.key} has no {role!r} file")
        return self.folder / entry.path

    @property
    def root(self) -> Path:
        """The store folder the entry lives in (``<root>/<name>/<version>``)."""
        return self.folder.parent.parent

    def linked_path(self, link: LinkedFile) -> Path:
        """Where a linked file lies: in another entry's folder of the same store."""
        return self.root / link.path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    """Parse and validate ``folder/manifest.json``; errors name the file."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: no manifest") from exc
    except ValidationError as exc:
        raise StoreError(f"{path}: invalid manifest: {exc}") from exc


def scan(root: Path = DEFAULT_ROOT) -> tuple[list[StoreEntry], dict[str, str]]:
    """All valid entries under ``root`` (sorted by name, version) and ``{folder: error}`` for invalid ones."""
    entries: list[StoreEntry] = []
    errors: dict[str, str] = {}
    for manifest_path in sorted(Path(root).glob(f"*/*/{MANIFEST_NAME}")):
        folder = manifest_path.parent
        try:
            manifest = read_manifest(folder)
        except StoreError as exc:
            errors[str(folder)] = str(exc)
            continue
        if (manifest.name, manifest.version) != (folder.parent.name, folder.name):
            errors[str(folder)] = f"manifest says {manifest.key} but lives in {folder.parent.name}/{folder.name}"
            continue
        entries.append(StoreEntry(manifest, folder))
    return entries, errors


def _parts(text: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", text))


def version_key(version: str) -> tuple:
    """Sort key for versions: numeric parts numerically (``1.10.0`` after ``1.9.0``), others as text; a PEP 440
    local version sorts right after its public one (``1.0.0`` < ``1.0.0+p07`` < ``1.0.1``)."""
    public, _, local = version.partition("+")
    return (_parts(public), _parts(local) if local else ())


def newest(versions: Iterable[str]) -> str:
    """The version a request naming none gets: the newest public one. Local versions (``1.0.0+p07``, one
    person's fine-tune) are served only when asked for by name, unless the model has nothing else."""
    versions = list(versions)
    public = [v for v in versions if "+" not in v]
    return max(public or versions, key=version_key)


def find(name: str, version: str | None = None, root: Path = DEFAULT_ROOT) -> StoreEntry:
    """The entry for ``name`` (its newest public version unless ``version`` is given); StoreError when absent."""
    matches = {e.manifest.version: e for e in scan(root)[0] if e.manifest.name == name}
    if version is not None:
        matches = {v: e for v, e in matches.items() if v == version}
    if not matches:
        raise StoreError(f"no model {name!r}{f' version {version!r}' if version else ''} in {root}")
    return matches[newest(matches)]


def verify_file(entry: StoreEntry, role: FileRole) -> Path:
    """Path of the file with ``role`` after checking its size and sha256; raises StoreError otherwise."""
    path = entry.path(role)
    expected = entry.manifest.file(role)
    assert expected is not None
    if not path.is_file():
        raise StoreError(f"{entry.manifest.key}: missing file {path.name}")
    if path.stat().st_size != expected.bytes or sha256_file(path) != expected.sha256:
        raise StoreError(f"{entry.manifest.key}: checksum mismatch for {path.name}")
    return path


def read_linked(entry: StoreEntry) -> list[tuple[LinkedFile, bytes]]:
    """Each file the entry links, read once and checked against the size and sha256 the entry recorded, so what is
    checked is what is used; StoreError naming the other entry when it is absent or has changed."""
    out = []
    for link in entry.manifest.links:
        path = entry.linked_path(link)
        if not path.is_file():
            raise StoreError(
                f"{entry.manifest.key} reads the weights of {link.entry_key} (its {path.name}), which this store "
                "lacks: copy that entry too (model_store.copy_entry copies an entry with the entries it links)"
            )
        data = path.read_bytes()
        if len(data) != link.bytes or hashlib.sha256(data).hexdigest() != link.sha256:
            raise StoreError(f"{entry.manifest.key}: checksum mismatch for {path.name} of {link.entry_key} (linked)")
        out.append((link, data))
    return out


def copy_entry(entry: StoreEntry, root: Path, overwrite: bool = False) -> StoreEntry:
    """Copy ``entry`` into the store at ``root`` together with every entry it links (kept where ``root`` already
    holds the same file); StoreError where ``root`` holds a linked entry whose file differs."""
    dst = Path(root) / entry.manifest.name / entry.manifest.version
    if dst.exists():
        if not overwrite:
            raise StoreError(f"{dst} exists; pass overwrite to replace it")
        shutil.rmtree(dst)
    for link in entry.manifest.links:
        target = Path(root) / link.path
        if target.is_file():
            if sha256_file(target) != link.sha256:
                raise StoreError(f"{root} holds another {link.path} than {entry.manifest.key} links")
            continue
        name, version, _ = link.path.split("/")
        linked = entry.root / name / version
        copy_entry(StoreEntry(read_manifest(linked), linked), root, overwrite=True)
    shutil.copytree(entry.folder, dst)
    return StoreEntry(read_manifest(dst), dst)


def publish(
    manifest: Manifest, artifacts: dict[FileRole, Path], root: Path = DEFAULT_ROOT, overwrite: bool = False
) -> StoreEntry:
    """Copy artifacts into ``root/<name>/<version>/``, record their sha256 and write the manifest."""
    folder = Path(root) / manifest.name / manifest.version
    if folder.exists():
        if not overwrite:
            raise StoreError(f"{folder} exists; choose a new version or pass overwrite")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    files = []
    for role, src in artifacts.items():
        dst = folder / Path(src).name
        shutil.copyfile(src, dst)
        files.append(FileEntry(path=dst.name, role=role, sha256=sha256_file(dst), bytes=dst.stat().st_size))
    manifest = manifest.model_copy(update={"files": files})
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    log.info("published %s into %s", manifest.key, folder)
    return StoreEntry(read_manifest(folder), folder)
