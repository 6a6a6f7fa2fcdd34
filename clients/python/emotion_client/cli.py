"""emotion: the facial emotion service from the command line.

    emotion predict PHOTO... [--json] [--url URL]     every face in photos (a folder: its images, recursively)
    emotion face CROP...                              already-cropped faces
    emotion video CLIP [--wait]                       timelines (--wait: as a background job, with progress)
    emotion watch SOURCE [--summary out.json]         a live session: camera index, video file or stream URL
    emotion models | emotion health

A table by default; ``--json`` prints the API's JSON untouched (one object for one file, a list for several or
for a folder, error answers included). The exit status is 1 when anything failed, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from emotion_client import calls
from emotion_client.base import DEFAULT_URL
from emotion_client.cli_render import (
    render_face,
    render_health,
    render_image,
    render_models,
    render_stream_line,
    render_stream_live,
    render_stream_summary,
    render_video,
)
from emotion_client.errors import EmotionAPIError, EmotionConnectionError, EmotionError
from emotion_client.schemas import Job, JobAccepted
from emotion_client.stream_messages import StreamResult
from emotion_client.stream_sync import Stream
from emotion_client.sync import EmotionClient
from emotion_client.watch import MissingOpenCV, VideoSource


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


def _files_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="requests in flight at once (4): the service batches them, so a folder goes faster; answers keep the "
        "files' order",
    )


def _watch_parser(watch: argparse.ArgumentParser) -> None:
    watch.add_argument("source", metavar="SOURCE", help="a camera index (0), a video file or a URL (rtsp://, http://)")
    watch.add_argument("--fps", type=float, help="frames sent per second at most (default: every frame)")
    watch.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of the source")
    watch.add_argument(
        "--fast", action="store_true", help="a file: each frame once the last is answered, not at its fps"
    )
    watch.add_argument("--summary", type=Path, metavar="PATH", help="write the final summary's JSON to PATH")
    watch.add_argument("--smoothing", type=float, help="EMA time constant in seconds; 0 = off")
    _model_options(watch)
    _face_options(watch)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="emotion", description=__doc__.split("\n")[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = sub.add_parser("predict", parents=[common], help="detect and classify every face in photos")
    predict.add_argument("files", nargs="+", metavar="PHOTO", help="image files, or folders searched recursively")
    _files_options(predict)
    _model_options(predict)
    _face_options(predict)
    face = sub.add_parser("face", parents=[common], help="classify already-cropped faces (no detection)")
    face.add_argument("files", nargs="+", metavar="CROP", help="image files, or folders searched recursively")
    _files_options(face)
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
    _watch_parser(sub.add_parser("watch", parents=[common], help="a live session on a camera, video file or URL"))
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
    """The JSON (one object for one file named, a list for several or for a folder) or the rendered table."""
    if getattr(args, "json", False):
        one = len(answers) == 1 and not any(Path(p).is_dir() for p in getattr(args, "files", ()))
        print(json.dumps(answers[0] if one else answers, indent=2))
    else:
        print(render(answers))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}  # what the service decodes


def expand(paths: Sequence[str]) -> list[str]:
    """Each path as given, a folder replaced by its image files (recursively, sorted; others skipped): a folder
    of photos is the common input, and the service would refuse the folder itself."""
    files: list[str] = []
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            files.append(path)
            continue
        found = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            _error(f"{path}: a folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
    return files


def _per_file(client: EmotionClient, args: argparse.Namespace, make_call: Callable[[str], calls.Call]) -> tuple:
    """Each file's answer (the error's JSON for a refused one), in the files' order, ``--concurrency`` requests in
    flight, with a progress bar for several."""
    files = expand(args.files)
    if not files:
        raise EmotionError("no image files to send")
    if args.concurrency < 1:
        raise EmotionError(f"--concurrency {args.concurrency}: at least 1")

    def one(path: str) -> tuple[str, Any, BaseException | None]:
        try:
            return path, client.json(make_call(path)), None
        except EmotionConnectionError:
            raise  # the service is unreachable: every other file would fail the same way
        except (EmotionAPIError, OSError, ValueError, TypeError) as exc:
            return path, None, exc

    answers, failed = [], 0
    pool = ThreadPoolExecutor(min(args.concurrency, len(files)))
    try:
        done = pool.map(one, files)  # in order; an unreachable service raises here
        bar = tqdm(done, total=len(files), desc=args.command, unit="file", file=sys.stderr, disable=len(files) < 2)
        for path, answer, exc in bar:
            if exc is not None:
                failed += 1
                _error(f"{path}: {_describe(exc)}")
                answer = {"detail": exc.detail if isinstance(exc, EmotionAPIError) else _describe(exc)}
            answers.append((path, answer))
    finally:
        pool.shutdown(cancel_futures=True)  # unreachable, or Ctrl-C: the files not yet sent are not
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


class LiveView:
    """Results as they come: a table redrawn in place on a terminal, plain lines otherwise, JSON lines with
    ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json, self.tty = as_json, sys.stdout.isatty() and not as_json
        self.lines, self.dropped = 0, 0

    def show(self, result: StreamResult) -> None:
        self.dropped += result.skipped
        if self.as_json:
            print(result.model_dump_json(exclude_unset=True), flush=True)
        elif not self.tty:
            print(render_stream_line(result.model_dump()), flush=True)
        else:
            text = render_stream_live(result.model_dump(), self.dropped)
            up = f"\x1b[{self.lines}F\x1b[J" if self.lines else ""  # back to the table's first line, cleared
            sys.stdout.write(f"{up}{text}\n")
            sys.stdout.flush()
            self.lines = text.count("\n") + 1


def _watch(client: EmotionClient, args: argparse.Namespace, source: VideoSource) -> Stream:
    """Run the session until the source ends or Ctrl-C; either way it is closed with its final summary."""
    options = {k: getattr(args, k) for k in ("model", "version", "max_faces", "min_face_size", "smoothing")}
    lockstep = args.fast and source.kind == "file"
    stream = client.stream(source, timestamps=source.time_of, pace="lockstep" if lockstep else None, **options)
    view = LiveView(getattr(args, "json", False))
    try:
        with stream:
            for result in stream:
                view.show(result)
    except KeyboardInterrupt:
        pass  # the way to end a camera's session: the stream has sent `close` and read the final summary
    return stream


def cmd_watch(client: EmotionClient, args: argparse.Namespace) -> int:
    try:
        source = VideoSource(args.source, fps=args.fps, duration=args.duration, realtime=not args.fast)
    except MissingOpenCV as exc:
        _error(str(exc))
        return 1
    try:
        stream = _watch(client, args, source)
    finally:
        source.close()
    if stream.summary is None:
        _error(f"the session ended without a summary (close code {stream.close_code})")
        return 1
    answer = stream.summary.model_dump(mode="json", exclude_unset=True)
    if args.summary is not None:
        args.summary.write_text(json.dumps(answer, indent=2) + "\n")
    print(json.dumps(answer) if getattr(args, "json", False) else render_stream_summary(stream.summary.model_dump()))
    for error in stream.errors:
        _error(f"frame {error.seq}: {error.detail}")
    if stream.close_code not in (None, 1000):
        _error(f"the server ended the session ({stream.close_code})")
    return 0


COMMANDS = {
    "predict": cmd_predict,
    "face": cmd_face,
    "video": cmd_video,
    "watch": cmd_watch,
    "models": cmd_models,
    "health": cmd_health,
}


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
