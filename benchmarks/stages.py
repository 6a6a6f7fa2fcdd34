"""Where a request's time goes, stage by stage, in this process with the service's own objects (no HTTP).

``/predict/image``: decode, detect (the pipeline's ``find``: detector, padded retry, whole-image fallback), crop and
preprocess, model (onnxruntime and postprocessing, as one batch of the photo's faces), quality (each face's picture
quality and reliable flag), response (the pydantic response built and encoded to JSON); ``per_face_ms`` is
crop+preprocess+model divided by the photo's faces. ``/predict/face``: decode, preprocess, model, quality, response.
Each figure is the median of ``repeats`` calls; ``bench_service`` subtracts their sum from the HTTP p50 at
concurrency 1 to show what the web stack (uvicorn, routing, multipart, dependencies) costs. ``image_in_sequence``: the
photo's stages timed as a request runs them, one after another (each starts with the previous one's data in the
caches), whose sum is what the stages cost inside a request. ``web``: the web layer
measured as a stage of its own (``web_stage``).

    python -m benchmarks.stages [--detector retinaface] [--model NAME] [--repeats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from benchmarks import add_model_argument, find_entry, served_predictor
from benchmarks.synth import photo_on_canvas
from service.config import Settings
from service.detection import DlibHogDetector, create_detector
from service.imaging import decode_image
from service.main import create_app
from service.options import resolve_options
from service.pipelines.face import FacePipeline
from service.quality import assess, picture_quality
from service.results import DetectedFace, FaceResult, ImageResult, ModelId
from service.schemas import face_response, image_response

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEB_BODIES = ("multipart", "raw_body")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", help="detector backend (default: the service's)")
    add_model_argument(p)
    p.add_argument("--version")
    p.add_argument("--repeats", type=int, default=200)
    return p


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: first-call allocations and caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def judge_faces(image, faces, probabilities, settings: Settings) -> list:
    """Each face's quality and reliable flag, as ``FacePipeline`` judges a photo's faces (its picture, then the
    answer's certainty)."""
    return [
        assess(picture_quality(image, f.box, f.landmarks, f.score), probabilities[i], settings.quality)
        for i, f in enumerate(faces)
    ]


def judge_crop(crop, probabilities, settings: Settings):
    """A face crop's quality: the whole image is the face."""
    return assess(picture_quality(crop, (0, 0, crop.shape[1], crop.shape[0])), probabilities, settings.quality)


def stage_breakdown(
    photo: bytes, face: bytes, model: str, version: str | None, repeats: int, detector: str | None = None
) -> dict[str, dict[str, float]]:
    """Median ms per stage for a photo (``image``) and a face crop (``face``)."""
    settings = Settings(_env_file=None, **({"detector": {"backend": detector}} if detector else {}))
    predictor = served_predictor(find_entry(model, version), settings)
    predictor.warmup()
    pipeline = FacePipeline(create_detector(settings.detector), settings.limits.max_image_pixels)
    opts, spec = resolve_options(settings), predictor.manifest.input
    model_id, max_pixels = ModelId.of(predictor.manifest), settings.limits.max_image_pixels

    image = decode_image(photo, max_pixels)
    faces = pipeline.find(image, opts)
    prepared = predictor.prepare([pipeline.cut(image, f.box, spec, opts) for f in faces])
    preds = predictor.postprocess(predictor.run(prepared.x), prepared)
    result = ImageResult(
        model_id, image.shape[1], image.shape[0], [DetectedFace(*p) for p in zip(faces, preds, strict=True)], image
    )
    steps = {
        "decode": lambda: decode_image(photo, max_pixels),
        "detect": lambda: pipeline.find(image, opts),
        "crop_preprocess": lambda: predictor.prepare([pipeline.cut(image, f.box, spec, opts) for f in faces]),
        "model": lambda: predictor.postprocess(predictor.run(prepared.x), prepared),
        "quality": lambda: judge_faces(image, faces, preds.probabilities, settings),
        "response": lambda: image_response(result).model_dump_json(),
    }
    image_stages = {name: median_ms(step, repeats) for name, step in steps.items()}  # each back to back
    crop = decode_image(face, max_pixels)
    one = predictor.prepare([crop])
    face_preds = predictor.postprocess(predictor.run(one.x), one)
    face_result = FaceResult(model_id, face_preds[0])
    face_stages = {
        "decode": median_ms(lambda: decode_image(face, max_pixels), repeats),
        "preprocess": median_ms(lambda: predictor.prepare([crop]), repeats),
        "model": median_ms(lambda: predictor.postprocess(predictor.run(one.x), one), repeats),
        "quality": median_ms(lambda: judge_crop(crop, face_preds.probabilities[0], settings), repeats),
        "response": median_ms(lambda: face_response(face_result).model_dump_json(), repeats),
    }
    per_face = (image_stages["crop_preprocess"] + image_stages["model"]) / max(1, len(faces))
    in_sequence = stages_in_sequence(steps, repeats)
    return {
        "image": {**image_stages, "faces": len(faces), "total": round(sum(image_stages.values()), 3)},
        "image_in_sequence": in_sequence,
        "per_face_ms": round(per_face, 3),  # crop+preprocess+model per face of the photo: the models' cost compared
        "face": {**face_stages, "total": round(sum(face_stages.values()), 3)},
        "detector": settings.detector.backend,  # type: ignore[dict-item]
    }


def stages_in_sequence(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The stages as a request runs them, one after another, ``repeats`` times: median ms per stage and of the
    whole. Each stage then starts with the previous one's data in the caches, not its own (as in the back-to-back
    medians), which is what a request's stages cost inside the server."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    totals = []
    for _ in range(repeats):
        total = 0.0
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            took = (time.perf_counter() - started) * 1000
            times[name].append(took)
            total += took
        totals.append(total)
    return {
        **{k: round(statistics.median(v), 3) for k, v in times.items()},
        "total": round(statistics.median(totals), 3),
    }


def web_stage(face: bytes, model: str, version: str | None, repeats: int) -> dict[str, float]:
    """The web layer as a measured stage: ``POST /predict/face`` through the service's own ASGI app in this process
    (middleware, routing, upload parsing, the thread hop, serialisation; no sockets, no uvicorn), one request at a
    time, as a multipart form and as a raw body: the median ms per request, and the event loop's own CPU ms per
    request (``time.thread_time`` of the loop's thread: what the loop spends beside the model's worker thread)."""
    return asyncio.run(_web_stage(face, model, version, repeats))


async def _web_stage(face: bytes, model: str, version: str | None, repeats: int) -> dict[str, float]:
    app = create_app(Settings(_env_file=None))
    query = f"model={model}" + (f"&version={version}" if version else "")
    boundary = "stage-7f3a91"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + face
        + f"\r\n--{boundary}--\r\n".encode()
    )
    bodies = {"multipart": (f"multipart/form-data; boundary={boundary}", form), "raw_body": ("image/jpeg", face)}
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        await app.state.registry.get(model, version)
        for name, (content_type, body) in bodies.items():
            await _asgi_post(app, query, content_type, body)  # warm
            times, cpu = [], time.thread_time()
            for _ in range(repeats):
                started = time.perf_counter()
                await _asgi_post(app, query, content_type, body)
                times.append((time.perf_counter() - started) * 1000)
            out[f"{name}_ms"] = round(statistics.median(times), 3)
            out[f"{name}_loop_cpu_ms"] = round((time.thread_time() - cpu) * 1000 / repeats, 3)
    return out


async def _asgi_post(app, query: str, content_type: str, body: bytes) -> None:
    """One ``POST /predict/face`` straight into the ASGI app; fails unless it answers 200."""
    headers = [(b"host", b"stage"), (b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict/face",
        "raw_path": b"/predict/face",
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answered: list[dict] = []

    async def receive() -> dict:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        answered.append(message)

    await app(scope, receive, send)
    if answered[0]["status"] != 200:
        raise SystemExit(f"POST /predict/face answered {answered[0]['status']}: {answered[-1].get('body')!r}")


def print_breakdown(stages: dict, http_p50: dict[str, float] | None = None) -> None:
    """One line per route: ms per stage, their sum and, given the HTTP p50 at concurrency 1, the web stack's share."""
    for route in ("image", "face"):
        parts = "  ".join(f"{k} {v:.2f}" for k, v in stages[route].items() if k not in {"total", "faces"})
        line = f"{route:5s} stages (ms, median): {parts}  = {stages[route]['total']:.2f}"
        if http_p50 and route in http_p50:
            line += f"; HTTP p50 {http_p50[route]:.2f} -> web stack {http_p50[route] - stages[route]['total']:.2f}"
        print(line)
    if "image_in_sequence" in stages:
        seq = stages["image_in_sequence"]
        parts = "  ".join(f"{k} {v:.2f}" for k, v in seq.items() if k != "total")
        line = f"image stages in sequence (as a request runs them): {parts}  = {seq['total']:.2f}"
        if http_p50 and "image" in http_p50:
            line += f"; HTTP p50 / this {http_p50['image'] / seq['total']:.2f}"
        print(line)
    if "per_face_ms" in stages:
        print(f"per face (crop+preprocess+model, photo route): {stages['per_face_ms']:.2f} ms")
    if "web" in stages:
        web = stages["web"]
        print(
            "face through the ASGI app in-process (ms per request, median; event-loop CPU): "
            + "  ".join(f"{k} {web[f'{k}_ms']:.2f} (loop CPU {web[f'{k}_loop_cpu_ms']:.2f})" for k in WEB_BODIES)
        )


def sample_inputs() -> tuple[bytes, bytes]:
    """A FER2013 val crop, and a 640x480 JPEG with one real face (the first photo dlib's HOG finds one face in:
    the same photo whichever detector the server runs)."""
    face = sorted((DATA / "fer2013" / "val" / "happy").glob("*.jpg"))[0].read_bytes()
    detector = DlibHogDetector()
    for path in sorted((DATA / "photos" / "images").glob("*.jpg")):
        canvas = photo_on_canvas(cv2.imread(str(path)), 640, 480)
        if len(detector.detect(canvas)) == 1:
            return face, cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    raise SystemExit("no single-face photo found")


def main(args: argparse.Namespace) -> dict:
    face, photo = sample_inputs()
    stages = stage_breakdown(photo, face, args.model, args.version, args.repeats, args.detector)
    stages["web"] = web_stage(face, args.model, args.version, args.repeats)
    print_breakdown(stages)
    print(json.dumps(stages))
    return stages


if __name__ == "__main__":
    main(get_args_parser().parse_args())
