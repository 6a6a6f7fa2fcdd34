"""emotion: the facial emotion service from the command line.

    emotion predict PHOTO... [--json] [--url URL]     every face in photos
    emotion face CROP...                              already-cropped faces
    emotion video CLIP [--wait]                       timelines (--wait: as a background job, with progress)
    emotion models | emotion health

A table by default; ``--json`` prints the API's JSON untouched (one object for one file, a list for several,
error answers included). The exit status is 1 when anything failed, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from emotion_client import calls
from emotion_client.base import DEFAULT_URL
from emotion_client.cli_render import render_face, render_health, render_image, render_models, render_video
from emotion_client.errors import EmotionAPIError, EmotionConnectionError, EmotionError
from emotion_client.schemas import Job, JobAccepted
from emotion_client.sync import EmotionClient


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (SUPPRESS: the one given wins, wherever)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"service URL (EMOTION_URL, else {DEFAULT_URL})")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="sent as X-API-Key (EMOTION_API_KEY)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request (60)")
    common.add_argument("--retries", type=int, default=argparse.SUPPRESS, help="retries on 503 or no connection (3)")
    return common


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (default: the service's default model)")
    p.add_argument("--version", help="model version (default: the newest)")


def _face_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-faces", type=int, help="keep the largest N faces")
    p.add_argument("--min-face-size", type=int, help="smallest face to find, in pixels")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="emotion", description=__doc__.split("\n")[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = sub.add_parser("predict", parents=[common], help="detect and classify every face in photos")
    predict.add_argument("files", nargs="+", metavar="PHOTO")
    _model_options(predict)
    _face_options(predict)
    face = sub.add_parser("face", parents=[common], help="classify already-cropped faces (no detection)")
    face.add_argument("files", nargs="+", metavar="CROP")
    _model_options(face)
    video = sub.add_parser("video", parents=[common], help="per-face emotion timelines of a clip")
    video.add_argument("clip", metavar="CLIP")
    video.add_argument("--wait", action="store_true", help="run it as a background job and wait, showing progress")
    video.add_argument("--poll", type=float, default=0.5, help="seconds between job polls with --wait (0.5)")
    video.add_argument("--sample-fps", type=float, help="frames analysed per second of video (5)")
    video.add_argument("--max-frames", type=int, help="frames analysed at most")
    video.add_argument("--start", type=float, help="seconds")
    video.add_argument("--end", type=float, help="seconds")
    video.add_argument("--smoothing", type=float, help="EMA time constant in seconds; 0 = off")
    _model_options(video)
    _face_options(video)
    sub.add_parser("models", parents=[common], help="the models the service has, with their state")
    health = sub.add_parser("health", parents=[common], help="readiness (exit status 1 unless ready)")
    health.add_argument("--live", action="store_true", help="liveness instead of readiness")
    return parser


def _error(message: str) -> None:
    tqdm.write(f"emotion: {message}", file=sys.stderr)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EmotionAPIError):
        return f"{exc.status}: {exc.detail}"
    return str(exc) or type(exc).__name__


def _emit(args: argparse.Namespace, answers: list[Any], render: Callable[[list[Any]], str]) -> None:
    """The JSON (one object for one input, a list for several) or the rendered table, on stdout."""
    if getattr(args, "json", False):
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
    else:
        print(render(answers))


def _per_file(client: EmotionClient, args: argparse.Namespace, make_call: Callable[[str], calls.Call]) -> tuple:
    """Each file's answer (the error's JSON for a refused one), in order, with a progress bar for several."""
    answers, failed = [], 0
    for path in tqdm(args.files, desc=args.command, unit="file", file=sys.stderr, disable=len(args.files) < 2):
        try:
            answers.append((path, client.json(make_call(path))))
        except EmotionConnectionError:
            raise  # the service is unreachable: every other file would fail the same way
        except (EmotionAPIError, OSError, ValueError, TypeError) as exc:
            failed += 1
            _error(f"{path}: {_describe(exc)}")
            answers.append((path, {"detail": exc.detail if isinstance(exc, EmotionAPIError) else _describe(exc)}))
    return answers, failed


def cmd_predict(client: EmotionClient, args: argparse.Namespace) -> int:
    opts = {"model": args.model, "version": args.version, "max_faces": args.max_faces}
    opts["min_face_size"] = args.min_face_size
    answers, failed = _per_file(client, args, lambda path: calls.predict_image(path, **opts))
    _emit(args, [a for _, a in answers], lambda _: render_image(answers))
    return 1 if failed else 0


def cmd_face(client: EmotionClient, args: argparse.Namespace) -> int:
    answers, failed = _per_file(client, args, lambda path: calls.predict_face(path, args.model, args.version))
    _emit(args, [a for _, a in answers], lambda _: render_face(answers))
    return 1 if failed else 0


def _video_options(args: argparse.Namespace) -> dict[str, Any]:
    names = ("model", "version", "sample_fps", "max_frames", "start", "end", "smoothing", "max_faces", "min_face_size")
    return {name: getattr(args, name) for name in names}


def _wait(client: EmotionClient, job: JobAccepted, poll: float) -> Any:
    """Wait for a job with a progress bar; its result's JSON as the server sent it. Ctrl-C cancels the job."""
    with tqdm(total=100, desc=f"job {job.id}", unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}") as bar:

        def show(current: Job) -> None:
            bar.set_postfix_str(current.status)
            bar.update(round(current.progress * 100) - bar.n)

        try:
            client.wait_for_job(job.id, poll_interval=poll, progress=show)
        except KeyboardInterrupt:
            client.cancel_job(job.id)
            raise
    return client.json(calls.job(job.id))["result"]


def cmd_video(client: EmotionClient, args: argparse.Namespace) -> int:
    if args.wait:
        answer = _wait(client, client.submit_video_job(args.clip, **_video_options(args)), args.poll)
    else:
        answer = client.json(calls.predict_video(args.clip, **_video_options(args)))
    _emit(args, [answer], lambda _: render_video(args.clip, answer))
    return 0


def cmd_models(client: EmotionClient, args: argparse.Namespace) -> int:
    answer = client.json(calls.models())
    _emit(args, [answer], lambda _: render_models(answer))
    return 0


def cmd_health(client: EmotionClient, args: argparse.Namespace) -> int:
    answer = client.json(calls.health("live" if args.live else "ready"))
    _emit(args, [answer], lambda _: render_health(answer))
    return 0 if answer.get("status") == "ok" else 1


COMMANDS = {"predict": cmd_predict, "face": cmd_face, "video": cmd_video, "models": cmd_models, "health": cmd_health}


def _client(args: argparse.Namespace) -> EmotionClient:
    options = {k: getattr(args, k) for k in ("timeout", "retries") if hasattr(args, k)}
    return EmotionClient(getattr(args, "url", None), getattr(args, "api_key", None), **options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _client(args) as client:
            return COMMANDS[args.command](client, args)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except (EmotionError, OSError, ValueError, TypeError) as exc:  # JobFailed and unreachable servers included
        _error(_describe(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
