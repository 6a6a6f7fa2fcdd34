"""The Open Inference Protocol v2 wire format (the KServe / Triton REST protocol), with Triton's binary tensor
data extension: body schemas for the OpenAPI document, request parsing, response encoding.

A request body is a JSON object, optionally followed by raw tensor bytes (then the header
``Inference-Header-Content-Length`` gives the JSON's length and each binary input carries
``parameters.binary_data_size``). BYTES elements are 4-byte little-endian lengths followed by the bytes in
binary form, and base64 strings in JSON (encoded images are not text). Malformed requests raise InvalidInput,
whose detail the v2 router answers as ``{"error": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from model_store import Manifest
from service.errors import InvalidInput

IMAGE_INPUT = "image"
PROBABILITIES, VALENCE_AROUSAL = "probabilities", "valence_arousal"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
SUPPORTED_DATATYPES = ("FP32", "BYTES")


# --- documented bodies ---------------------------------------------------------------------------------------


class V2Error(BaseModel):
    error: str = Field(description="what is wrong with the request, or why it cannot be served now")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a variable dimension (the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="every version of the model, newest first")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="row-major, flat or nested; BYTES elements as base64 strings")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[float] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


def inline_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON schema with its ``$defs`` inlined (a request body schema cannot point into ``$defs``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            return resolve(defs[ref.rsplit("/", 1)[-1]]) if ref else {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


# --- what a model offers -------------------------------------------------------------------------------------


def model_outputs(manifest: Manifest) -> list[TensorMetadata]:
    """The model's own first output (logits), the calibrated probabilities and, where the model has them,
    valence/arousal: the outputs every infer can return."""
    k = len(manifest.labels)
    outputs = [TensorMetadata(name=manifest.outputs[0], datatype="FP32", shape=[-1, k])]
    outputs.append(TensorMetadata(name=PROBABILITIES, datatype="FP32", shape=[-1, k]))
    if manifest.valence_arousal != "none":
        outputs.append(TensorMetadata(name=VALENCE_AROUSAL, datatype="FP32", shape=[-1, 2]))
    return outputs


def tensor_shape(manifest: Manifest) -> list[int]:
    """The model's preprocessed input: ``[-1, C, H, W]``, ``[-1, C, T, H, W]`` for clip models, ``[-1, L]`` for
    feature vectors."""
    return [-1, *manifest.input.tensor_shape]


def model_inputs(manifest: Manifest, input_name: str) -> list[TensorMetadata]:
    """The FP32 model input and, for per-image models, the BYTES input ``image`` (encoded images, one per row)."""
    inputs = [TensorMetadata(name=input_name, datatype="FP32", shape=tensor_shape(manifest))]
    if manifest.kind.input == "face":  # the image input runs the /predict/face path
        inputs.append(TensorMetadata(name=IMAGE_INPUT, datatype="BYTES", shape=[-1]))
    return inputs


# --- requests --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]  # FP32: flat float32 array; BYTES: the elements


@dataclass(frozen=True)
class Wanted:
    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[Wanted] | None  # None: every output
    binary_output: bool


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers")
    return tuple(raw)


def _parameters(raw: Any, where: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return raw


def _split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON object and the binary tensor data after it."""
    if header_length is None:
        length = len(body)
    elif header_length.strip().isdigit() and int(header_length) <= len(body):
        length = int(header_length)
    else:
        raise InvalidInput(f"{HEADER_LENGTH} must be a byte count no larger than the body ({len(body)} bytes)")
    try:
        head = json.loads(body[:length])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"the request is not a JSON inference request: {exc}") from None
    if not isinstance(head, dict):
        raise InvalidInput("the request must be a JSON object with 'inputs'")
    return head, body[length:]


def parse_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """An inference request (JSON, or JSON followed by binary tensor data) -> typed tensors; InvalidInput if
    anything is malformed. CPU-bound for large tensors: run it in a worker thread."""
    head, binary = _split_body(body, header_length)
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    tensors, offset = [], 0
    for i, raw in enumerate(inputs):
        tensor, offset = _tensor(raw, f"inputs[{i}]", binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidInput(f"the body holds {len(binary)} bytes of binary data, the inputs declare {offset}")
    params = _parameters(head.get("parameters"), "request")
    request_id = head.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return InferRequest(request_id, tensors, _wanted(head.get("outputs")), params.get("binary_data_output") is True)


def _tensor(raw: Any, where: str, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("datatype"), str):
        raise InvalidInput(f"{where}: a tensor needs a 'name', a 'datatype' and a 'shape'")
    name, datatype, shape = raw["name"], raw["datatype"], _shape(raw.get("shape"), where)
    where = f"input {name!r}"
    if datatype not in SUPPORTED_DATATYPES:
        raise InvalidInput(f"{where}: datatype {datatype!r} is not served; use FP32 or BYTES")
    size = _parameters(raw.get("parameters"), where).get("binary_data_size")
    count = math.prod(shape)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInput(f"{where}: binary_data_size {size!r} does not fit the binary data sent")
        chunk, offset = binary[offset : offset + size], offset + size
        data = _binary_bytes(chunk, where) if datatype == "BYTES" else _binary_fp32(chunk, count, where)
    elif "data" in raw:
        data = _json_bytes(raw["data"], where) if datatype == "BYTES" else _json_fp32(raw["data"], where)
    else:
        raise InvalidInput(f"{where}: no 'data' and no binary_data_size")
    if len(data) != count:
        raise InvalidInput(f"{where}: shape {list(shape)} holds {count} elements, the data has {len(data)}")
    return Tensor(name, datatype, shape, data), offset


def _binary_fp32(chunk: bytes, count: int, where: str) -> np.ndarray:
    if len(chunk) != 4 * count:
        raise InvalidInput(f"{where}: {len(chunk)} bytes of FP32 data, the shape needs {4 * count}")
    return np.frombuffer(chunk, "<f4").astype(np.float32)


def _json_fp32(data: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"{where}: 'data' is not a regular (rectangular) array of numbers") from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{where}: FP32 'data' must hold numbers only")
    return array.astype(np.float32).ravel()


def _binary_bytes(chunk: bytes, where: str) -> list[bytes]:
    """Length-prefixed elements: 4-byte little-endian length, then that many bytes, repeated."""
    elements, pos = [], 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise InvalidInput(f"{where}: BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", chunk, pos)
        if pos + 4 + n > len(chunk):
            raise InvalidInput(f"{where}: BYTES element {len(elements)} is longer than the data sent")
        elements.append(chunk[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return elements


def _flatten(data: Any) -> list[Any]:
    return [x for item in data for x in _flatten(item)] if isinstance(data, list) else [data]


def _json_bytes(data: Any, where: str) -> list[bytes]:
    try:
        elements = _flatten(data) if isinstance(data, list) else None
    except RecursionError:
        elements = None
    if elements is None or not all(isinstance(e, str) for e in elements):
        raise InvalidInput(f"{where}: BYTES 'data' must be a list of base64 strings")
    try:
        return [base64.b64decode(e, validate=True) for e in elements]
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: BYTES elements in JSON must be base64 (encoded images are not text)") from None


def _wanted(raw: Any) -> list[Wanted] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    wanted = []
    for o in raw:
        params = _parameters(o.get("parameters"), f"output {o['name']!r}")
        if "classification" in params:
            raise InvalidInput("the classification extension is not served; read 'probabilities' instead")
        binary = params.get("binary_data")
        wanted.append(Wanted(o["name"], None if binary is None else binary is True))
    return wanted


# --- responses ---------------------------------------------------------------------------------------------------


def check_outputs(request: InferRequest, available: list[str], offered: list[str]) -> None:
    """InvalidInput for a requested output this input cannot produce (checked before any inference)."""
    for want in request.outputs or []:
        if want.name not in offered:
            raise InvalidInput(f"unknown output {want.name!r}; the model has {', '.join(offered)}")
        if want.name not in available:
            raise InvalidInput(f"output {want.name!r} is not produced for input {request.inputs[0].name!r}")


def encode_response(
    request: InferRequest, model_name: str, model_version: str, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, followed by binary tensor data for the outputs asked so."""
    wanted = request.outputs if request.outputs is not None else [Wanted(name, None) for name in outputs]
    entries, chunks = [], []
    for want in wanted:
        array = np.ascontiguousarray(outputs[want.name], "<f4")
        entry: dict[str, Any] = {"name": want.name, "datatype": "FP32", "shape": list(array.shape)}
        if request.binary_output if want.binary is None else want.binary:
            chunks.append(array.tobytes())
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request.id is not None:
        body["id"] = request.id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
