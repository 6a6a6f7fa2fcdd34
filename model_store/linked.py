"""One copy of a model's weights: the ONNX graph and the ``torch.export`` program read ``model.safetensors``.

A store entry used to carry its weights three times (slim safetensors, ONNX, torch program). Now the safetensors
file is the only copy: the ONNX graph's initializers are ONNX *external data* whose location is the safetensors
file and whose offsets are each tensor's bytes in it (onnxruntime reads them where they lie), and the torch
program's archive leaves out the weight files that equal a safetensors tensor (``open_program`` puts them back in
memory before ``torch.export.load``). The training side writes such files (``training.export_onnx``,
``training.export_slim``); a self-contained ONNX or program (an import, an older entry) loads as before.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

WEIGHTS_CONFIG_SUFFIX = "_weights_config.json"


def tensor_ranges(path: Path) -> dict[str, tuple[int, int, str, list[int]]]:
    """Each tensor of a safetensors file: ``(absolute byte offset, byte length, dtype, shape)``."""
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


def open_program(path: Path, weights: Path | None) -> io.BytesIO | Path:
    """The torch program archive with any weight it left out read back from ``weights``; the file itself when it
    lacks none. ValueError when a left-out weight is not in ``weights``."""
    with zipfile.ZipFile(path) as archive:
        links, present = program_links(archive), set(archive.namelist())
        missing = {member: name for member, name in links.items() if member not in present}
        if not missing:
            return path
        if weights is None:
            raise ValueError(f"{path.name} reads its weights from model.safetensors, which the entry lacks")
        ranges = tensor_ranges(weights)
        unknown = sorted(set(missing.values()) - set(ranges))
        if unknown:
            raise ValueError(f"{path.name} needs {unknown[:3]} from {weights.name}, which does not hold them")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as joined, open(weights, "rb") as fh:
            for info in archive.infolist():
                joined.writestr(info, archive.read(info))
            for member, name in missing.items():
                offset, length, _, _ = ranges[name]
                fh.seek(offset)
                joined.writestr(member, fh.read(length))
    out.seek(0)
    return out
