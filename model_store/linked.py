"""One copy of a model's weights: the ONNX graph and the ``torch.export`` program read ``model.safetensors``, and
an ensemble reads a member that is another store entry from that entry's file.

A store entry used to carry its weights three times (slim safetensors, ONNX, torch program). Now the safetensors
file is the only copy: the ONNX graph's initializers are ONNX *external data* whose location is the safetensors
file and whose offsets are each tensor's bytes in it (onnxruntime reads them where they lie), and the torch
program's archive leaves out the weight files that equal a safetensors tensor (``open_program`` puts them back in
memory before ``torch.export.load``). The training side writes such files (``training.export_onnx``,
``training.export_slim``); a self-contained ONNX or program (an import, an older entry) loads as before.

An entry may also link another entry's weights file (``Manifest.links``: ``<name>/<version>/model.safetensors``,
its sha256, and the prefix its tensors take here, e.g. ``members.0.``). Its graph's initializers for those tensors
point at ``../../<name>/<version>/model.safetensors``; onnxruntime refuses external data outside the graph's folder,
so the runner hands it that file's bytes (and the entry's own) in memory under their locations
(``external_files``). A tensor the entry
holds in float16 is read from the linked float32 through a Cast to float16 in the graph, rounded as
``export_slim --half`` rounds it, so the outputs are those of the copy it replaced.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_store.manifest import LinkedFile

if TYPE_CHECKING:
    import onnx
    import torch

    from model_store.store import StoreEntry

WEIGHTS_CONFIG_SUFFIX = "_weights_config.json"


def tensor_ranges(path: Path | bytes) -> dict[str, tuple[int, int, str, list[int]]]:
    """Each tensor of a safetensors file (a path, or its bytes): ``(absolute byte offset, byte length, dtype,
    shape)``."""
    if isinstance(path, bytes):
        (size,) = struct.unpack("<Q", path[:8])
        header = json.loads(path[8 : 8 + size])
    else:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
    base = 8 + size
    return {
        name: (
            base + meta["data_offsets"][0],
            meta["data_offsets"][1] - meta["data_offsets"][0],
            meta["dtype"],
            meta["shape"],
        )
        for name, meta in header.items()
        if name != "__metadata__"
    }


def graph_location(link: LinkedFile) -> str:
    """The external-data location a graph gives a linked file: its path from the entry's own folder."""
    return "../../" + link.path


def external_files(
    links: Sequence[tuple[LinkedFile, bytes]], own: dict[str, bytes] | None = None
) -> tuple[list[str], list[np.ndarray], list[int]]:
    """onnxruntime's ``add_external_initializers_from_files_in_memory`` arguments: the linked files' bytes under
    their graph locations, and the entry's own files (``own``: name -> bytes), since a session given files in
    memory reads no external data from disk."""
    files = {graph_location(link): data for link, data in links} | (own or {})
    buffers = [np.frombuffer(data, np.uint8) for data in files.values()]
    return list(files), buffers, [len(b) for b in buffers]


@dataclass(frozen=True)
class Tensor:
    """Where one tensor of an entry's weights lies: a file's bytes, its range there, and whether the entry holds
    it in float16 while the file has float32."""

    data: bytes
    offset: int
    length: int
    dtype: str
    shape: list[int]
    half: bool = False

    def raw(self) -> bytes:
        """The tensor's bytes as the entry holds it."""
        stored = self.data[self.offset : self.offset + self.length]
        return np.frombuffer(stored, np.float32).astype(np.float16).tobytes() if self.half else stored


def entry_tensors(own: bytes | None, links: Sequence[tuple[LinkedFile, bytes]] = ()) -> dict[str, Tensor]:
    """Every tensor of an entry by its name there: its own ``model.safetensors`` (bytes) and the linked files'."""
    out = {}
    if own is not None:
        out = {name: Tensor(own, *where) for name, where in tensor_ranges(own).items()}
    for link, data in links:
        halves = set(link.float16)
        for name, where in tensor_ranges(data).items():
            out[link.prefix + name] = Tensor(data, *where, half=name in halves)
    return out


def _weights_prefix(config_name: str) -> str:
    """``model/data/weights/model_weights_config.json`` -> ``model/data/weights/``."""
    return config_name.rsplit("/", 1)[0] + "/"


def program_links(archive: zipfile.ZipFile) -> dict[str, str]:
    """``{archive member: tensor name}`` for every weight of a torch program archive."""
    links = {}
    for config in (n for n in archive.namelist() if n.endswith(WEIGHTS_CONFIG_SUFFIX)):
        prefix = _weights_prefix(config)
        for name, meta in json.loads(archive.read(config)).get("config", {}).items():
            links[prefix + meta["path_name"]] = name
    return links


def open_program(path: Path, weights: Path | None, links: Sequence[tuple[LinkedFile, bytes]] = ()) -> io.BytesIO | Path:
    """The torch program archive with any weight it left out read back from ``weights`` (and the linked files); the
    file itself when it lacks none. ValueError when a left-out weight is in none of them."""
    with zipfile.ZipFile(path) as archive:
        links_, present = program_links(archive), set(archive.namelist())
        missing = {member: name for member, name in links_.items() if member not in present}
        if not missing:
            return path
        if weights is None and not links:
            raise ValueError(f"{path.name} reads its weights from model.safetensors, which the entry lacks")
        tensors = entry_tensors(weights.read_bytes() if weights is not None else None, links)
        unknown = sorted(set(missing.values()) - set(tensors))
        if unknown:
            where = weights.name if weights is not None else "the linked files"
            raise ValueError(f"{path.name} needs {unknown[:3]} from {where}, which does not hold them")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as joined:
            for info in archive.infolist():
                joined.writestr(info, archive.read(info))
            for member, name in missing.items():
                joined.writestr(member, tensors[name].raw())
    out.seek(0)
    return out


def entry_state(entry: StoreEntry) -> dict[str, torch.Tensor]:
    """The entry's whole ``state_dict`` (its own weights and the linked ones, each checked against its sha256), for
    the training side: teachers, ensemble members, fine-tuning."""
    from safetensors.torch import load

    from model_store.store import StoreError, read_linked, verify_file

    if entry.manifest.file("weights") is None and not entry.manifest.links:
        raise StoreError(f"{entry.manifest.key} has no weights file (model.safetensors)")
    state = load(verify_file(entry, "weights").read_bytes()) if entry.manifest.file("weights") else {}
    for link, data in read_linked(entry):
        halves = set(link.float16)
        for name, tensor in load(data).items():
            state[link.prefix + name] = tensor.half() if name in halves else tensor
    return state


def entry_graph(entry: StoreEntry) -> onnx.ModelProto:
    """The entry's fp32 ONNX graph with every weight embedded (checked against the manifest), for a runtime or tool
    that takes one file; needs the ``onnx`` package."""
    from model_store.store import read_linked, verify_file

    path = verify_file(entry, "onnx")
    files = {graph_location(link): data for link, data in read_linked(entry)}
    if entry.manifest.file("weights") is not None:
        weights = verify_file(entry, "weights")
        files[weights.name] = weights.read_bytes()
    return embed_external_data(path, files)


def embed_external_data(path: Path, files: dict[str, bytes]) -> onnx.ModelProto:
    """``path``'s graph with each external initializer's bytes copied in from ``files`` (location -> bytes);
    ValueError naming the locations ``files`` lacks."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    external = [i for i in _initializers(proto.graph) if i.data_location == onnx.TensorProto.EXTERNAL]
    missing = sorted({_external(i)["location"] for i in external} - set(files))
    if missing:
        raise ValueError(f"{path.name} keeps weights in external data that was not found: {', '.join(missing)}")
    for init in external:
        info = _external(init)
        data, offset = files[info["location"]], int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(data) - offset
        init.raw_data = data[offset : offset + length]
        init.data_location = onnx.TensorProto.DEFAULT
        del init.external_data[:]
    return proto


def external_locations(graph: Path | onnx.ModelProto) -> list[str]:
    """The external-data files a graph (a file, or one already loaded without its external data) names: none for
    a self-contained one; needs the ``onnx`` package."""
    import onnx

    proto = onnx.load(str(graph), load_external_data=False) if isinstance(graph, Path) else graph
    inits = [i for i in _initializers(proto.graph) if i.data_location == onnx.TensorProto.EXTERNAL]
    return sorted({_external(i)["location"] for i in inits})


def _external(init: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in init.external_data}


def _initializers(graph: onnx.GraphProto):
    """The graph's initializers and those of its subgraphs (If/Loop branches)."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attr.g)
            for g in attr.graphs:
                yield from _initializers(g)
