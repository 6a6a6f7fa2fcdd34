"""``emotion watch``'s frame source: a camera index, a video file or a stream URL, opened on the client side with
OpenCV (the ``watch`` extra: ``pip install "emotion-client[watch]"``; the client itself does not need it)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

INSTALL_HINT = 'emotion watch needs OpenCV and numpy: pip install "emotion-client[watch]"'
SourceKind = Literal["camera", "file", "url"]


class MissingOpenCV(ImportError):
    """OpenCV is not installed: the message says how to get it."""


def import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise MissingOpenCV(INSTALL_HINT) from exc
    return cv2


def source_kind(spec: str) -> SourceKind:
    """A camera index (digits), a URL (``scheme://``: rtsp, http...) or a video file, which must exist."""
    if spec.isdigit():
        return "camera"
    if "://" in spec:
        return "url"
    if not Path(spec).is_file():
        raise FileNotFoundError(f"no such video file: {spec} (SOURCE is a camera index, a video file or a URL)")
    return "file"


class RateSampler:
    """Keeps frames at most ``fps`` a second by their capture times (None keeps all): on a regular grid, so a
    30 fps source at 10 keeps every third frame; a gap restarts the grid rather than bursting to catch up."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"--fps must be > 0, not {fps}")
        self.step, self.next_t = (1.0 / fps if fps else 0.0), None

    def __call__(self, t: float) -> bool:
        if not self.step:
            return True
        if self.next_t is not None and t < self.next_t - 1e-3:
            return False
        late = self.next_t is not None and t - self.next_t < self.step
        self.next_t = (self.next_t if late else t) + self.step
        return True


class VideoSource:
    """Iterating yields BGR frames at the source's pace (a file is slept to its fps unless ``realtime`` is off),
    at most ``fps`` a second, for ``duration`` seconds of the source at most; ``t`` is the capture time of the
    frame last yielded (a file's own clock, else seconds since the first read), which ``time_of`` gives the stream
    (the stream asks right after each frame, on the same thread)."""

    def __init__(
        self, spec: str, *, fps: float | None = None, duration: float | None = None, realtime: bool = True
    ) -> None:
        cv2 = import_cv2()
        self.spec, self.kind = spec, source_kind(spec)
        self.sample, self.duration, self.realtime = RateSampler(fps), duration, realtime
        self.capture = cv2.VideoCapture(int(spec) if self.kind == "camera" else spec)
        if not self.capture.isOpened():
            raise OSError(f"OpenCV cannot open {spec!r}")
        native = self.capture.get(cv2.CAP_PROP_FPS)
        self.source_fps = native if self.kind == "file" and 0 < native < 1000 else None
        self.t = 0.0

    def __iter__(self) -> Iterator[Any]:
        start = time.monotonic()
        for index in itertools.count():
            ok, frame = self.capture.read()
            if not ok:
                return  # the end of a file, or a camera or stream that stopped
            t = index / self.source_fps if self.source_fps else time.monotonic() - start
            if self.duration is not None and t >= self.duration:
                return
            if not self.sample(t):
                continue
            if self.source_fps and self.realtime:
                time.sleep(max(0.0, start + t - time.monotonic()))
            self.t = t
            yield frame

    def time_of(self, _sent: int) -> float:
        return self.t

    def close(self) -> None:
        self.capture.release()
