"""The Open Inference Protocol v2 (KServe / Triton REST) beside the native routes, for tools that speak it
(``tritonclient``, KServe clients).

Two inputs per per-image model: its own FP32 tensor (preprocessed, as the metadata's shape says) returns the
model's first output with calibrated ``probabilities`` (and ``valence_arousal``) for those rows; the BYTES input
``image`` (encoded images, one per row) runs exactly the ``/predict/face`` path (decode, the whole image as the
face, mirror TTA, calibration). Every error from these routes, domain and validation errors included, is the
protocol's ``{"error": ...}`` (OipRoute), never the native ``{"detail": ...}``.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model_store import Prepared
from service.api import oip
from service.api.body import BodyRejected
from service.api.deps import ApiKeyDep, PipelinesDep, RegistryDep, SettingsDep
from service.api.errors import ErrorResponse, http_problem, status_of, validation_message
from service.config import Settings
from service.errors import InvalidInput, ModelUnavailable, ServiceError
from service.pipelines import Pipelines
from service.registry import LoadedModel, ModelRegistry

log = logging.getLogger("service.api")
PLATFORMS = {"onnx": "onnxruntime_onnx", "onnx-int8": "onnxruntime_onnx", "torch": "pytorch_export"}


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """Any exception from a v2 route as ``{"error": ...}``: bad requests (malformed, corrupt, unsupported) are
    400, unknown models 404, oversized inputs 413, unavailable models and timeouts 503 with ``Retry-After``."""
    headers: dict[str, str] | None = None
    if isinstance(exc, ServiceError):
        (status, headers), message = status_of(exc), exc.detail
        status = 400 if status in (415, 422) else status
    elif isinstance(exc, TimeoutError):
        status, headers, message = 503, {"Retry-After": "5"}, "the request took too long; retry later"
    elif isinstance(exc, RequestValidationError):
        status, message = 400, validation_message(exc)
    elif isinstance(exc, StarletteHTTPException):
        (status, message), headers = http_problem(exc), exc.headers
        status = 400 if status == 422 else status
    else:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        status, message = 500, "internal server error"
    return ErrorResponse({"error": message}, status_code=status, headers=headers)


class OipRoute(APIRoute):
    """A route whose every failure, in dependencies and request validation too, answers ``{"error": ...}``."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (BodyRejected, ClientDisconnect):
                raise  # the body guard has answered (413, 408) or counts the hang-up (499): nothing to log
            except Exception as exc:
                return error_response(request, exc)

        return handle


router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=OipRoute)


def _errors(*codes: int) -> dict:
    text = {
        400: "malformed request, wrong input name, datatype or shape, or an undecodable image",
        401: "missing or wrong API key",
        404: "unknown model or version",
        413: "request body or image too large",
        503: "model unavailable or the request timed out (see Retry-After)",
    }
    documented = {code: {"description": text[code], "model": oip.V2Error} for code in codes}
    # Request validation answers 400 here too: "4XX" also keeps FastAPI from documenting its 422 {"detail"} body.
    return {**documented, "4XX": {"description": "any other client error", "model": oip.V2Error}}


# --- server -------------------------------------------------------------------------------------------------------


@router.get("", response_model=oip.ServerMetadata)
async def server_metadata(request: Request) -> oip.ServerMetadata:
    """Server name, version and protocol extensions (``binary_tensor_data``)."""
    return oip.ServerMetadata(name="emotion-service", version=request.app.version, extensions=oip.EXTENSIONS)


@router.get("/health/live", response_model=oip.ServerLive)
async def server_live() -> oip.ServerLive:
    """200 while the process answers."""
    return oip.ServerLive(live=True)


@router.get("/health/ready", response_model=oip.ServerReady, responses={503: {"model": oip.ServerReady}})
async def server_ready(registry: RegistryDep):
    """200 once the default model is loaded and warm (as ``/health/ready``), else 503."""
    try:
        ready = registry.resolve().state == "loaded"
    except ServiceError:
        ready = False
    return oip.ServerReady(ready=True) if ready else JSONResponse({"ready": False}, status_code=503)


# --- models -------------------------------------------------------------------------------------------------------


def _metadata(registry: ModelRegistry, model: LoadedModel) -> oip.ModelMetadata:
    manifest = model.manifest
    runner = model.predictor.runner
    return oip.ModelMetadata(
        name=manifest.name,
        versions=[r.entry.manifest.version for r in registry.all_records() if r.entry.manifest.name == manifest.name],
        platform=PLATFORMS.get(runner.backend, runner.backend),
        inputs=oip.model_inputs(manifest, _input_name(model)),
        outputs=oip.model_outputs(manifest),
    )


def _input_name(model: LoadedModel) -> str:
    """The FP32 input's name: the ONNX graph's own, else ``input``."""
    return getattr(model.predictor.runner, "input_name", None) or "input"


METADATA = {"response_model": oip.ModelMetadata, "responses": _errors(401, 404, 503), "dependencies": [ApiKeyDep]}


@router.get("/models/{name}", **METADATA)
async def model_metadata(name: str, registry: RegistryDep) -> oip.ModelMetadata:
    """Inputs and outputs of the model's newest version (loading it if needed)."""
    return _metadata(registry, await registry.get(name, None))


@router.get("/models/{name}/versions/{version}", **METADATA)
async def model_version_metadata(name: str, version: str, registry: RegistryDep) -> oip.ModelMetadata:
    """Inputs and outputs of one version of the model (loading it if needed)."""
    return _metadata(registry, await registry.get(name, version))


async def _ready(registry: ModelRegistry, name: str, version: str | None):
    try:
        await registry.get(name, version)
    except ModelUnavailable:
        return JSONResponse({"name": name, "ready": False}, status_code=503)
    return oip.ModelReady(name=name, ready=True)


READY = {
    "response_model": oip.ModelReady,
    "responses": {503: {"description": "the model failed to load", "model": oip.ModelReady}, **_errors(401, 404)},
    "dependencies": [ApiKeyDep],
}


@router.get("/models/{name}/ready", **READY)
async def model_ready(name: str, registry: RegistryDep):
    """200 when the model's newest version is loaded and serving (it is loaded on this call if needed)."""
    return await _ready(registry, name, None)


@router.get("/models/{name}/versions/{version}/ready", **READY)
async def model_version_ready(name: str, version: str, registry: RegistryDep):
    """200 when this version of the model is loaded and serving (it is loaded on this call if needed)."""
    return await _ready(registry, name, version)


# --- inference ----------------------------------------------------------------------------------------------------

BINARY = {"schema": {"type": "string", "format": "binary"}}
INFER = {
    "response_model": oip.InferenceResponse,
    "responses": {
        200: {
            "description": "the outputs: JSON, or JSON then binary tensor data (Inference-Header-Content-Length)",
            "content": {"application/octet-stream": BINARY},
        },
        **_errors(400, 401, 404, 413, 503),
    },
    "dependencies": [ApiKeyDep],
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": oip.inline_schema(oip.InferenceRequest)},
                "application/octet-stream": BINARY,
            },
        }
    },
}


@router.post("/models/{name}/infer", **INFER)
async def infer(
    name: str, request: Request, registry: RegistryDep, pipelines: PipelinesDep, settings: SettingsDep
) -> Response:
    """Inference on the model's newest version: its FP32 tensor, or encoded images as the BYTES input ``image``."""
    return await _infer(request, await registry.get(name, None), pipelines, settings)


@router.post("/models/{name}/versions/{version}/infer", **INFER)
async def infer_version(
    name: str, version: str, request: Request, registry: RegistryDep, pipelines: PipelinesDep, settings: SettingsDep
) -> Response:
    """Inference on one version of the model."""
    return await _infer(request, await registry.get(name, version), pipelines, settings)


async def _infer(request: Request, model: LoadedModel, pipelines: Pipelines, settings: Settings) -> Response:
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise InvalidInput("compressed requests are not served; send the body uncompressed")
    body = await request.body()
    parsed = await asyncio.to_thread(oip.parse_request, body, request.headers.get(oip.HEADER_LENGTH))
    input_name, offered = _input_name(model), [o.name for o in oip.model_outputs(model.manifest)]
    if len(parsed.inputs) != 1:
        raise InvalidInput(f"send one input: {input_name!r} (FP32) or {oip.IMAGE_INPUT!r} (BYTES)")
    tensor, max_rows = parsed.inputs[0], settings.batching.max_size
    if tensor.name == oip.IMAGE_INPUT:
        oip.check_outputs(parsed, offered[1:], offered)  # images give probabilities, not the model's raw output
        run = _infer_images(model, tensor, pipelines, max_rows)
    elif tensor.name == input_name:
        oip.check_outputs(parsed, offered, offered)
        run = _infer_tensor(model, tensor, max_rows)
    else:
        names = ", ".join(repr(i.name) for i in oip.model_inputs(model.manifest, input_name))
        raise InvalidInput(f"unknown input {tensor.name!r}; the model takes {names}")
    async with asyncio.timeout(settings.limits.request_timeout_s):
        outputs = await run
    content, headers = oip.encode_response(parsed, model.manifest.name, model.manifest.version, outputs)
    return Response(content, headers=headers)


def _rows(tensor: oip.Tensor, max_rows: int) -> int:
    if not tensor.shape or not 1 <= tensor.shape[0] <= max_rows:
        raise InvalidInput(f"input {tensor.name!r} must hold 1 to {max_rows} rows (EMOTION_BATCHING__MAX_SIZE)")
    return tensor.shape[0]


async def _infer_tensor(model: LoadedModel, tensor: oip.Tensor, max_rows: int) -> dict[str, np.ndarray]:
    """The model's own input, batched with other requests' rows: raw first output, probabilities, valence/arousal."""
    expected = oip.tensor_shape(model.manifest)
    if tensor.datatype != "FP32":
        raise InvalidInput(f"input {tensor.name!r} is FP32, not {tensor.datatype}")
    if len(tensor.shape) != len(expected) or list(tensor.shape[1:]) != expected[1:]:
        raise InvalidInput(f"input {tensor.name!r} has shape {list(tensor.shape)}; the model takes {expected}")
    rows = _rows(tensor, max_rows)
    x = np.asarray(tensor.data).reshape(tensor.shape)
    if not np.isfinite(x).all():
        raise InvalidInput(f"input {tensor.name!r} holds NaN or infinite values")
    preds = await model.infer(Prepared(x, rows), as_is=True)  # the client's own tensor: no mirror pass added
    outputs = {model.manifest.outputs[0]: preds.logits, oip.PROBABILITIES: preds.probabilities}
    if preds.valence_arousal is not None:
        outputs[oip.VALENCE_AROUSAL] = preds.valence_arousal
    return outputs


async def _infer_images(
    model: LoadedModel, tensor: oip.Tensor, pipelines: Pipelines, max_rows: int
) -> dict[str, np.ndarray]:
    """Each image through the ``/predict/face`` path (its decode in a worker thread, its rows batched)."""
    if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
        raise InvalidInput(f"input {oip.IMAGE_INPUT!r} is BYTES of shape [-1] (one encoded image per row)")
    _rows(tensor, max_rows)
    model.require_still()
    found = await asyncio.gather(*(pipelines.face.analyse_face(d, model) for d in tensor.data), return_exceptions=True)
    for i, result in enumerate(found):
        if isinstance(result, ServiceError):
            raise type(result)(f"image {i}: {result.detail}")
        if isinstance(result, BaseException):
            raise result
    preds = [r.prediction for r in found]
    outputs = {oip.PROBABILITIES: np.array([[p.emotions[k] for k in model.manifest.labels] for p in preds], np.float32)}
    if model.manifest.valence_arousal != "none":
        outputs[oip.VALENCE_AROUSAL] = np.array([[p.valence, p.arousal] for p in preds], np.float32)
    return outputs


# --- anything else under /v2 ---------------------------------------------------------------------------------------


class NotServed:
    """Unknown paths (404) and methods (405) under /v2 get the protocol's error shape too. A plain ASGI route with
    no method list (so it matches any method, where a function endpoint would match only GET), registered last:
    it only sees what no other v2 route takes."""

    async def __call__(self, scope, receive, send) -> None:
        path = scope["path"]
        matching = (r for r in router.routes if isinstance(r, APIRoute) and r.path_regex.match(path))
        allowed = sorted({m for r in matching for m in r.methods})
        if allowed:
            headers = {"Allow": ", ".join(allowed)}
            response = JSONResponse({"error": "method not allowed"}, status_code=405, headers=headers)
        else:
            response = JSONResponse({"error": f"no such Open Inference Protocol endpoint: {path}"}, status_code=404)
        await response(scope, receive, send)


for _path in ("/v2", "/v2/{rest:path}"):
    router.add_route(_path, NotServed(), methods=None, include_in_schema=False)
