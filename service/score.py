"""Score local photos and videos with the service's own pipeline, offline: no HTTP, no upload or duration limits.

    python -m service.score PATH [PATH ...] --output DIR [--model NAME] [--sample-fps 5] [--smoothing 0.25]
                            [--min-face-size PX] [--max-faces N] [--no-plot]

Folders are searched recursively for images and videos. Each input gets ``<name>.json`` (the HTTP API's schema),
``<name>.csv`` (one row per face, and per sample for videos) and ``<name>.png`` (a photo with its faces boxed and
labelled; a video's probability timeline per track, which needs matplotlib). ``summary.csv`` has a row per input,
errors included; the exit status is 1 when any input failed. Settings come from the same ``EMOTION_*``
variables as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from service.config import Settings, settings_or_exit
from service.errors import ModelNotFound, ModelUnavailable, ServiceError, UnsupportedFormat
from service.imaging import sniff_format
from service.metrics import Metrics
from service.options import Requested, resolve_options
from service.pipelines import Pipelines, build_pipelines
from service.registry import LoadedModel, ModelRegistry
from service.schemas import ImagePredictionResponse, VideoPredictionResponse, image_response, video_response
from service.video.decode import SNIFF_BYTES, sniff_video

IMAGES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEOS = {".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv", ".ts", ".mts", ".m2ts"}
SUFFIXES = IMAGES | VIDEOS
MAX_PLOTTED_TRACKS = 6


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="image or video files, or folders searched recursively")
    p.add_argument("--output", type=Path, required=True, help="folder for the results")
    p.add_argument("--model", help="model name (default: EMOTION_DEFAULT_MODEL)")
    p.add_argument("--version", help="model version (default: the newest)")
    p.add_argument("--sample-fps", type=float, default=5.0, help="video samples analysed per second")
    p.add_argument("--smoothing", type=float, default=0.25, help="video EMA time constant in seconds; 0 = off")
    p.add_argument("--min-face-size", type=int, help="smallest face to search for, in pixels")
    p.add_argument("--max-faces", type=int, help="per image or video frame (default: EMOTION_LIMITS__MAX_FACES)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    return p


def collect(paths: list[Path]) -> list[Path]:
    """Files named directly, and files with an image or video suffix under named folders, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        else:
            found.append(path)
    return found


def output_names(files: list[Path]) -> list[str]:
    """A distinct output name per input: its stem, numbered where two inputs share one."""
    seen: Counter[str] = Counter()
    names = []
    for path in files:
        seen[path.stem] += 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def requested(args: argparse.Namespace) -> Requested:
    return Requested(
        max_faces=args.max_faces, min_face_size=args.min_face_size, sample_fps=args.sample_fps, smoothing=args.smoothing
    )


def video_duration(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        fps, frames = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    return frames / fps if fps > 0 and frames > 0 else 0.0


async def score_video(path: Path, model: LoadedModel, pipelines: Pipelines, settings: Settings, args):
    """The video pipeline with no frame or duration limit, a progress bar per second of footage."""
    opts = resolve_options(settings, requested(args), capped=False)
    with tqdm(total=round(video_duration(path), 1), unit="s", desc=path.name, leave=False) as bar:

        def advance(t: float) -> None:
            bar.update(max(0.0, round(t, 1) - bar.n))

        return await pipelines.video.analyse(str(path), model, opts, progress=advance)


def face_rows(source: str, result: BaseModel) -> list[dict]:
    """CSV rows: one per face of an image, one per timeline point of each video track."""
    rows = []
    if isinstance(result, ImagePredictionResponse):
        for i, face in enumerate(result.faces):
            rows.append({"file": source, "face": i, **face.box.model_dump(), "score": face.score, **_affect(face)})
    else:
        for track in result.tracks:
            for point in track.timeline:
                where = {"track_id": track.track_id, "person_id": track.person_id, "t": point.t, "frame": point.frame}
                where.update(point.box.model_dump())
                rows.append({"file": source, **where, **_affect(point)})
    return rows


def person_rows(source: str, result: VideoPredictionResponse) -> list[dict]:
    """CSV rows: one per person of a video (its tracks, time on screen, summary and share of time per label)."""
    rows = []
    for person in result.persons:
        s = person.summary
        rows.append(
            {
                "file": source,
                "person_id": person.person_id,
                "track_ids": " ".join(map(str, person.track_ids)),
                "first_seen": person.first_seen,
                "last_seen": person.last_seen,
                "time_on_screen": person.time_on_screen,
                "dominant": s.dominant,
                "valence": s.valence,
                "arousal": s.arousal,
                **s.emotions,
                **{f"share_{label}": v for label, v in s.share.items()},
            }
        )
    return rows


def _affect(p) -> dict:
    return {"dominant": p.dominant, "valence": p.valence, "arousal": p.arousal, **p.emotions}


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row)) or ["file"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def draw_faces(image: np.ndarray, result: ImagePredictionResponse, path: Path) -> None:
    """The photo with each face boxed and labelled with its dominant expression and probability."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in result.faces:
        b = face.box
        cv2.rectangle(canvas, (b.x, b.y), (b.x + b.width, b.y + b.height), (0, 200, 255), thickness)
        text = f"{face.dominant} {face.emotions[face.dominant]:.2f}"
        cv2.putText(
            canvas, text, (b.x, max(12, b.y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thickness, (0, 200, 255), thickness
        )
    cv2.imwrite(str(path), canvas)


def plot_timeline(result: VideoPredictionResponse, path: Path, title: str) -> None:
    """Stacked class probabilities over time, one panel per track (the longest-present tracks first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = result.tracks[:MAX_PLOTTED_TRACKS]
    fig, axes = plt.subplots(max(1, len(tracks)), 1, figsize=(11, 2.2 * max(1, len(tracks))), squeeze=False)
    for ax, track in zip(axes[:, 0], tracks, strict=False):
        times = [p.t for p in track.timeline]
        labels = list(track.timeline[0].emotions)
        ax.stackplot(times, np.array([[p.emotions[k] for p in track.timeline] for k in labels]), labels=labels)
        ax.set(xlim=(0, result.duration_s), ylim=(0, 1), ylabel=f"track {track.track_id}")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("seconds")
    if tracks:
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_row(source: str, result: BaseModel | None, error: str | None) -> dict:
    row = {"file": source, "kind": "", "faces": 0, "dominant": "", "error": error or ""}
    if isinstance(result, ImagePredictionResponse):
        row.update(kind="image", faces=len(result.faces), dominant=result.faces[0].dominant if result.faces else "")
    elif isinstance(result, VideoPredictionResponse):
        dominant = result.summary.dominant if result.summary else ""
        row.update(kind="video", faces=len(result.tracks), dominant=dominant, duration_s=result.duration_s)
        row.update(frames_unreadable=result.frames_unreadable, warning="; ".join(result.warnings))
    return row


async def score_file(path: Path, name: str, model: LoadedModel, pipelines: Pipelines, settings: Settings, args):
    """Score one input and write its JSON, CSV and PNG; raises ServiceError or OSError on bad input."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    result: BaseModel
    if sniff_video(head):
        result = video_response(await score_video(path, model, pipelines, settings, args))
        if not args.no_plot and _can_plot():
            plot_timeline(result, args.output / f"{name}.png", path.name)
    elif sniff_format(head):
        opts = resolve_options(settings, requested(args), capped=False)
        found = await pipelines.face.analyse_image(path.read_bytes(), model, opts)
        result = image_response(found)
        if not args.no_plot:
            draw_faces(found.image, result, args.output / f"{name}.png")
    else:
        raise UnsupportedFormat("neither an image nor a video this service reads")
    (args.output / f"{name}.json").write_text(result.model_dump_json(indent=1))
    write_csv(args.output / f"{name}.csv", face_rows(str(path), result))
    if isinstance(result, VideoPredictionResponse) and result.persons:
        write_csv(args.output / f"{name}.persons.csv", person_rows(str(path), result))
    return result


@functools.cache
def _can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        tqdm.write("matplotlib is not installed (pip install matplotlib): video timelines are not plotted")
        return False
    return True


async def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    files = collect(args.paths)
    args.output.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry(settings, Metrics())
    try:
        model = await registry.get(args.model, args.version)
    except (ModelNotFound, ModelUnavailable) as exc:
        raise SystemExit(f"model: {exc}") from None
    pipelines = build_pipelines(settings)
    rows = []
    try:
        for path, name in tqdm(list(zip(files, output_names(files), strict=True)), unit="file", desc="scoring"):
            try:
                result, error = await score_file(path, name, model, pipelines, settings, args), None
            except ServiceError as exc:
                result, error = None, exc.detail
            except OSError as exc:
                result, error = None, f"cannot read: {exc.strerror or exc}"
            if error:
                tqdm.write(f"{path}: {error}")
            for warning in getattr(result, "warnings", []):
                tqdm.write(f"{path}: warning: {warning}")
            rows.append(summary_row(str(path), result, error))
    finally:
        await registry.close()
    write_csv(args.output / "summary.csv", rows)
    failed = sum(bool(r["error"]) for r in rows)
    print(f"scored {len(rows) - failed} of {len(rows)} inputs into {args.output}")
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
