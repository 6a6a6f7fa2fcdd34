"""Still-image prediction: a face crop, or a photo with every face detected."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

from service.api.deps import (
    RAW_BODY_TYPES,
    ApiKeyDep,
    ImageBytesDep,
    ImageRequestDep,
    ModelDep,
    PipelinesDep,
    SettingsDep,
    key_matches,
)
from service.api.uploads import plain_boundary, plain_file_part
from service.config import Settings
from service.options import resolve_options
from service.registry import LoadedModel
from service.schemas import ErrorDetail, FacePredictionResponse, ImagePredictionResponse, face_response, image_response

RAW_BODY = {"schema": {"type": "string", "format": "binary"}}
# Documents the raw-body alternative next to the multipart form FastAPI derives from ImageBytesDep.
RAW_IMAGE_BODY = {"requestBody": {"content": {"image/*": RAW_BODY, "application/octet-stream": RAW_BODY}}}
router = APIRouter(prefix="/predict", tags=["predict"], dependencies=[ApiKeyDep])
ERRORS = {
    code: {"description": text, "model": ErrorDetail}
    for code, text in {
        401: "missing or wrong API key",
        404: "unknown model or version",
        413: "upload or image too large",
        415: "unsupported format or content type",
        422: "corrupt or malformed input, invalid options, or wrong model kind",
        503: "model unavailable or server busy (see Retry-After)",
    }.items()
}
MODEL_QUERY = ("model", "version")


async def plain_upload(request: Request, settings: Settings) -> bytes | None:
    """The image of a request FastAPI would take as it is: a raw image body or a plain one-file form within the
    upload limit; None for any other (the full path reads it, and says what is wrong)."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith(RAW_BODY_TYPES):
        data: bytes | None = await request.body()
    elif boundary := plain_boundary(content_type.encode("latin-1")):
        data = plain_file_part(await request.body(), boundary)
    else:
        return None
    return data if data is not None and len(data) <= settings.limits.max_upload_bytes else None


def plain_model(request: Request) -> tuple[str | None, str | None] | None:
    """``model`` and ``version`` from a query string that validation would pass unchanged and that holds nothing
    else (each at most once and 64 characters); None otherwise."""
    query = request.query_params
    if any(name not in MODEL_QUERY for name in query):
        return None
    found = [query.getlist(name) for name in MODEL_QUERY]
    if any(len(values) > 1 or (values and len(values[0]) > 64) for values in found):
        return None
    return found[0][0] if found[0] else None, found[1][0] if found[1] else None


def key_accepted(request: Request, settings: Settings) -> bool:
    """Whether ``check_api_key`` would let the request through (a refusal is left to it, so it answers as ever)."""
    if settings.api_key is None:
        return True
    sent = request.headers.getlist("x-api-key")
    return len(sent) == 1 and key_matches(settings, sent[0])


class ThinRoute(APIRoute):
    """A predict route with a thin path for the request nearly every caller sends (the image as the raw body or as a
    plain one-file form, at most ``model``/``version`` in the query, the right key): the body is read once, no
    dependency is solved, the answer is serialised once by the response model's own serializer. Any other request
    takes FastAPI's full path, the same as before, and so does every refusal before the model runs; what fails after
    (model, image, timeout) raises the same errors into the same handlers. The declaration, and so the OpenAPI
    document, is the full path's. Subclasses say what the thin path answers (``answer``), in the route's response
    model, which serialises it."""

    async def answer(self, state, settings: Settings, data: bytes, model: LoadedModel) -> BaseModel:
        raise NotImplementedError

    def get_route_handler(self):
        full = super().get_route_handler()
        serializer = TypeAdapter(self.response_model)

        async def handle(request: Request) -> Response:
            state = request.app.state
            settings: Settings = state.settings
            query = plain_model(request)
            if query is None or request.app.dependency_overrides or not key_accepted(request, settings):
                return await full(request)
            data = await plain_upload(request, settings)
            if data is None:
                return await full(request)  # the body read here is kept on the request for the form parser
            model = await state.registry.get(*query)
            async with asyncio.timeout(settings.limits.request_timeout_s):
                answer = await self.answer(state, settings, data, model)
            return Response(serializer.dump_json(answer, by_alias=True), media_type="application/json")

        return handle


class FaceRoute(ThinRoute):
    """``POST /predict/face``: the face crop classified."""

    async def answer(self, state, settings: Settings, data: bytes, model: LoadedModel) -> FacePredictionResponse:
        return face_response(await state.pipelines.face.analyse_face(data, model))


class ImageRoute(ThinRoute):
    """``POST /predict/image``: every face of the photo, with the settings' options (none given in the query)."""

    async def answer(self, state, settings: Settings, data: bytes, model: LoadedModel) -> ImagePredictionResponse:
        return image_response(await state.pipelines.face.analyse_image(data, model, resolve_options(settings)))


def add_predict_route(path: str, endpoint, response_model: type[BaseModel], route_class: type[ThinRoute]) -> None:
    """``POST /predict<path>`` with the shared error answers, the raw-body alternative documented, and its thin path."""
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        response_model=response_model,
        responses=ERRORS,
        openapi_extra=RAW_IMAGE_BODY,
        route_class_override=route_class,
    )


async def predict_face(
    data: ImageBytesDep, model: ModelDep, pipelines: PipelinesDep, settings: SettingsDep
) -> FacePredictionResponse:
    """Classify an already-cropped face (no detection): the whole image is the face."""
    async with asyncio.timeout(settings.limits.request_timeout_s):
        return face_response(await pipelines.face.analyse_face(data, model))


add_predict_route("/face", predict_face, FacePredictionResponse, FaceRoute)


async def predict_image(
    data: ImageBytesDep, model: ModelDep, pipelines: PipelinesDep, settings: SettingsDep, requested: ImageRequestDep
) -> ImagePredictionResponse:
    """Detect every face in a photo and classify each; faces are ordered largest first."""
    opts = resolve_options(settings, requested)
    async with asyncio.timeout(settings.limits.request_timeout_s):
        return image_response(await pipelines.face.analyse_image(data, model, opts))


add_predict_route("/image", predict_image, ImagePredictionResponse, ImageRoute)
