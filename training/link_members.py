"""Weights once: an ensemble member that is another store entry is linked, not copied.
``python -m training.link_members model_store/NAME/VERSION`` (``training.publish`` runs it on every entry it writes).

For each member whose ``source`` (``name:version``) is an entry of the same store and whose tensors are that entry's
``model.safetensors`` byte for byte (or its float32 rounded to float16, as ``export_slim --half`` rounds them),
the entry's own weights file drops them and its manifest records the other file instead (``Manifest.links``: path
from the store root, sha256, byte count, the ``members.I.`` prefix, the tensors held in float16). The fp32 ONNX
graph is rewritten to read those initializers from the linked file (``model_store.linked``); the int8 graph is
self-contained and stays as it is. The rewritten graph must give the old one's outputs exactly (``--tolerance``),
else nothing is changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from model_store import InputSpec, StoreEntry, normalize, read_manifest, sha256_file
from model_store.linked import Tensor, entry_tensors, external_files, graph_location, tensor_ranges
from model_store.manifest import MANIFEST_NAME, FileEntry, LinkedFile
from model_store.store import read_linked, verify_file
from training.export_onnx import HALF_SUFFIX, _point_at

log = logging.getLogger("training.link_members")
FLOAT32_SUFFIX = ".float32"  # a linked float32 initializer that a Cast rounds to the entry's float16 tensor


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a store folder, e.g. model_store/emotion_transfer/1.1.0")
    p.add_argument("--tolerance", type=float, default=0.0, help="largest output change accepted (default: none)")
    return p


def find_links(entry: StoreEntry) -> list[LinkedFile]:
    """The members of ``entry`` that another entry of its store holds: one ``LinkedFile`` each."""
    own = verify_file(entry, "weights").read_bytes()
    mine = entry_tensors(own)
    found = []
    for i, member in enumerate(entry.manifest.architecture_args.get("members", [])):
        name, _, version = str(member.get("source", "")).partition(":")
        path = entry.root / name / version / "model.safetensors"
        if not (name and version and path.is_file()) or path.parent == entry.folder:
            continue
        link = match(mine, f"members.{i}.", f"{name}/{version}/{path.name}", path.read_bytes())
        if link is None:
            log.info("member %d (%s) differs from %s: kept in the entry's own file", i, member["source"], path)
        else:
            found.append(link)
    return found


def match(mine: dict[str, Tensor], prefix: str, path: str, data: bytes) -> LinkedFile | None:
    """A link to ``data`` when every tensor of it is ``prefix`` + its name in ``mine`` (as is, or float16-rounded)."""
    halves = []
    for name, theirs in entry_tensors(data).items():
        held = mine.get(prefix + name)
        if held is None or held.shape != theirs.shape:
            return None
        if held.dtype == "F16" and theirs.dtype == "F32":
            if Tensor(data, theirs.offset, theirs.length, "F32", theirs.shape, half=True).raw() != held.raw():
                return None
            halves.append(name)
        elif held.dtype != theirs.dtype or held.raw() != theirs.raw():
            return None
    sha = hashlib.sha256(data).hexdigest()
    return LinkedFile(path=path, sha256=sha, bytes=len(data), prefix=prefix, float16=sorted(halves))


def write_without(own: bytes, drop: set[str], out: Path) -> None:
    """``own`` (a safetensors file's bytes) without the tensors ``drop``, the rest byte for byte in their order."""
    (size,) = struct.unpack("<Q", own[:8])
    header = json.loads(own[8 : 8 + size])
    kept = sorted(
        (meta["data_offsets"][0], name) for name, meta in header.items() if name not in drop | {"__metadata__"}
    )
    new_header, chunks, at = {}, [], 0
    if "__metadata__" in header:
        new_header["__metadata__"] = header["__metadata__"]
    for start, name in kept:
        meta = header[name]
        length = meta["data_offsets"][1] - start
        chunks.append(own[8 + size + start : 8 + size + start + length])
        new_header[name] = {"dtype": meta["dtype"], "shape": meta["shape"], "data_offsets": [at, at + length]}
        at += length
    text = json.dumps(new_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def relink_graph(graph: Path, weights: Path, links: list[tuple[LinkedFile, bytes]], out: Path) -> None:
    """``graph`` (its external data in ``weights``' old layout) reading the new ``weights`` and the linked files."""
    proto = onnx.load(str(graph), load_external_data=False)
    ranges = tensor_ranges(weights)
    linked = {}
    for link, data in links:
        for name, where in tensor_ranges(data).items():
            linked[link.prefix + name] = (link, where, name in set(link.float16))
    casts = []
    for init in proto.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        name = init.name.removesuffix(HALF_SUFFIX) if init.data_type == onnx.TensorProto.FLOAT16 else init.name
        if name in linked:
            link, (offset, length, _, _), half = linked[name]
            if half:  # the linked float32, cast to the float16 tensor the graph already upcasts
                half_name = init.name
                init.name, init.data_type = name + FLOAT32_SUFFIX, onnx.TensorProto.FLOAT
                casts.append(
                    onnx.helper.make_node(
                        "Cast", [init.name], [half_name], name=f"{name}.round", to=onnx.TensorProto.FLOAT16
                    )
                )
            _point_at(init, graph_location(link), offset, length)
        elif name in ranges:
            offset, length, _, _ = ranges[name]
            _point_at(init, weights.name, offset, length)
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.save(proto, str(out))


def outputs(graph: Path, x: np.ndarray, links: list[tuple[LinkedFile, bytes]], weights: Path) -> list[np.ndarray]:
    """The graph's outputs on ``x``; with ``links``, its files handed over in memory as the store's runner does."""
    options = ort.SessionOptions()
    files = external_files(links, {weights.name: weights.read_bytes()}) if links else None
    if files:  # onnxruntime reads these buffers where they lie: they must outlive the session
        options.add_external_initializers_from_files_in_memory(*files)
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    result = session.run(None, {session.get_inputs()[0].name: x})
    del session, files
    return result


def sample_input(spec: InputSpec, n: int = 4, seed: int = 7) -> np.ndarray:
    """``n`` random faces as the model reads them, the first one gray, so members routed to either kind run."""
    faces = np.random.default_rng(seed).integers(0, 256, (n, spec.height, spec.width, spec.channels), np.uint8)
    faces[0] = faces[0, ..., :1]
    return normalize(faces, spec)


def link(folder: Path, tolerance: float = 0.0) -> list[LinkedFile]:
    """Link every member of the entry at ``folder`` that its store holds; the links made (none: unchanged)."""
    folder = Path(folder)
    entry = StoreEntry(read_manifest(folder), folder)
    m = entry.manifest
    if m.links or m.file("weights") is None or m.file("onnx") is None or not isinstance(m.input, InputSpec):
        return []
    links = [(lk, (entry.root / lk.path).read_bytes()) for lk in find_links(entry)]
    if not links:
        return []
    drop = {lk.prefix + name for lk, data in links for name in tensor_ranges(data)}
    x = sample_input(m.input)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        staged = Path(tmp)
        weights, graph = staged / m.file("weights").path, staged / m.file("onnx").path
        write_without(entry.path("weights").read_bytes(), drop, weights)
        relink_graph(entry.path("onnx"), weights, links, graph)
        before = outputs(verify_file(entry, "onnx"), x, [], weights)
        after = outputs(graph, x, links, weights)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(before, after, strict=True))
        if diff > tolerance:
            raise SystemExit(f"{m.key}: the linked graph's outputs differ by {diff:.2e}; nothing changed")
        manifest = m.model_copy(update={"files": [_updated(f, staged) for f in m.files] + [lk for lk, _ in links]})
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
        saved = entry.path("weights").stat().st_size - weights.stat().st_size
        for name in (weights.name, graph.name, MANIFEST_NAME):
            os.replace(staged / name, folder / name)
    read_linked(StoreEntry(read_manifest(folder), folder))  # the links check out
    log.info(
        "%s: linked %s (outputs max abs diff %.1e; %d bytes fewer)", m.key, [lk.path for lk, _ in links], diff, saved
    )
    return [lk for lk, _ in links]


def _updated(f: FileEntry | LinkedFile, staged: Path) -> FileEntry | LinkedFile:
    new = staged / f.path
    if isinstance(f, LinkedFile) or not new.is_file():
        return f
    return f.model_copy(update={"sha256": sha256_file(new), "bytes": new.stat().st_size})


def main(args: argparse.Namespace) -> list[LinkedFile]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    links = link(args.model, args.tolerance)
    print(f"{args.model}: {len(links)} member(s) linked" + "".join(f"\n  {lk.prefix} -> {lk.path}" for lk in links))
    return links


if __name__ == "__main__":
    main(get_args_parser().parse_args())
