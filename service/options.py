"""What a request asks (``Requested``) merged with the service settings into what the pipelines run (``Options``).

One function, ``resolve_options``, applies defaults and caps for the routes, and defaults without caps for the
offline scorer, so a clamp is written once.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from service.config import Settings
from service.errors import InvalidInput


@dataclass(frozen=True)
class Requested:
    """A request's own choices; ``None`` means the service default."""

    max_faces: int | None = None
    min_face_size: int | None = None
    sample_fps: float = 5.0
    max_frames: int | None = None
    start: float = 0.0
    end: float | None = None
    smoothing: float = 0.25


@dataclass(frozen=True)
class Options:
    """Everything the face and video pipelines need to know about one request."""

    max_faces: int
    min_face_size: int | None  # also how small a face detection searches for
    whole_image_fallback_max_side: int
    close_up_padding: float = 0.0  # photos only: the second, padded scan (``detection.close_up_faces``)
    finer_look: int = 0  # photos only: a large one with no face found is scanned again down to 1/N of its side
    finer_look_from: int = 1280  # longest side (px) from which a photo gets that finer look
    sample_fps: float = 5.0
    max_frames: int = 3000
    start: float = 0.0
    end: float | None = None
    smoothing: float = 0.25
    max_duration: float = 600.0
    full_detect_every: int = 5  # samples; in between, only regions around live tracks are searched
    quiet_passes: int = 3  # a whole-frame pass over a still picture waits up to this many cadences (0: never)
    detect_max_side: int = 640  # full-frame video passes scan larger frames at this longest side
    min_readable_share: float = 0.5  # of a video's analysed span that must decode, else InvalidInput
    cut_threshold: float | None = 0.75  # share of a sample that is new for a hard cut (ends every track); None: off
    steady_boxes: bool = True  # a track's face cut from its smoothed box (``service.video.boxes``), not each raw one
    find_bars: bool = True  # faces found and cut inside flat bars at the image's edges (``service.detection.bars``)


@dataclass(frozen=True)
class VideoCaps:
    """How much of a video one analysis may take: the synchronous route's limits, or a background job's."""

    max_frames: int
    max_duration: float

    @classmethod
    def request(cls, settings: Settings) -> VideoCaps:
        """``POST /predict/video``: the ``video`` group."""
        return cls(settings.video.max_frames, settings.video.max_duration_s)

    @classmethod
    def job(cls, settings: Settings) -> VideoCaps:
        """A background job (``POST /jobs/video``): the ``queue`` group's larger limits."""
        return cls(settings.queue.max_frames, settings.queue.max_duration_s)


def _capped(asked: int | None, limit: int, capped: bool) -> int:
    return min(asked or limit, limit) if capped else (asked or limit)


def resolve_options(
    settings: Settings, requested: Requested = Requested(), capped: bool = True, caps: VideoCaps | None = None
) -> Options:
    """Merge ``requested`` with ``settings``; ``capped=False`` (the offline scorer) lifts the per-request limits
    on faces, frames and duration; ``caps`` replaces the video limits (default: the synchronous route's)."""
    if requested.end is not None and requested.end <= requested.start:
        raise InvalidInput("end must be after start")
    if requested.sample_fps <= 0:
        raise InvalidInput("sample_fps must be positive")
    video, caps = settings.video, caps or VideoCaps.request(settings)
    return Options(
        max_faces=_capped(requested.max_faces, settings.limits.max_faces, capped),
        min_face_size=requested.min_face_size or settings.detector.min_face_size,
        whole_image_fallback_max_side=settings.detector.whole_image_fallback_max_side,
        close_up_padding=settings.detector.close_up_padding,
        finer_look=settings.detector.finer_look,
        finer_look_from=settings.detector.finer_look_from,
        sample_fps=requested.sample_fps,
        max_frames=_capped(requested.max_frames, caps.max_frames, True)
        if capped
        else requested.max_frames or sys.maxsize,
        start=requested.start,
        end=requested.end,
        smoothing=requested.smoothing,
        max_duration=caps.max_duration if capped else math.inf,
        full_detect_every=max(1, round(requested.sample_fps * video.full_detect_every_s)),
        quiet_passes=video.quiet_passes,
        detect_max_side=video.detector_max_side,
        min_readable_share=video.min_readable_share,
        cut_threshold=video.cut_threshold if video.shot_cuts else None,
        steady_boxes=video.steady_boxes,
        find_bars=settings.detector.find_bars,
    )
