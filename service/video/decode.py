"""Reading a video: container sniffing, opening with its limits, and a decoder thread that hands over the frame
at or after each sampling time, so decoding overlaps the detection of the previous sample."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from service.errors import InputTooLarge, InvalidInput, UnsupportedFormat

CONTAINERS = "mp4, mov, avi, webm or mkv"


def sniff_video(head: bytes) -> str | None:
    """Container from the first bytes: mp4/mov, avi, webm/mkv; None when unknown."""
    if head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


def check_container(head: bytes) -> str:
    """The container of a video whose first bytes are ``head``; UnsupportedFormat for anything else."""
    kind = sniff_video(head)
    if kind is None:
        raise UnsupportedFormat(f"unsupported video container; send {CONTAINERS}")
    return kind


@dataclass(frozen=True)
class Sampling:
    """Which frames to hand over: one at or after each ``start + k / sample_fps`` up to ``end``."""

    sample_fps: float
    start: float = 0.0
    end: float | None = None
    max_frames: int = 3000
    max_duration: float = 600.0


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    duration: float  # from the header; completed from the stream when the header has none
    frames_decoded: int = 0
    last_index: int = -1
    decode_seconds: float = 0.0


def _timestamp(cap: cv2.VideoCapture, index: int, fps: float, fallback_fps: float) -> float:
    """Presentation time of the frame just grabbed; frame index over fps when the container gives none."""
    msec = cap.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(msec) and (msec > 0 or index == 0):
        return msec / 1000.0
    return index / (fps or fallback_fps)


_DONE = object()


class FrameSampler:
    """Opens ``path`` (InvalidInput, InputTooLarge on a bad or too long file) and yields ``(t, index, frame)``
    for each sampled frame from a decoder thread; at most a few decoded frames wait in memory."""

    def __init__(self, path: str, sampling: Sampling) -> None:
        self.sampling = sampling
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise InvalidInput("the video could not be opened: unsupported codec or corrupt file")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        duration = count / fps if fps and count > 0 else 0.0
        if duration > sampling.max_duration:
            self.cap.release()
            raise InputTooLarge(f"video lasts {duration:.1f}s; the limit is {sampling.max_duration:.0f}s")
        width, height = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.info = VideoInfo(fps, width, height, duration)

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        s, info, cap = self.sampling, self.info, self.cap
        step, next_t, index, sampled = 1.0 / s.sample_fps, s.start, -1, 0
        try:
            while sampled < s.max_frames and not stop.is_set():
                started = time.perf_counter()
                if not cap.grab():
                    break
                index += 1
                info.frames_decoded += 1
                t = _timestamp(cap, index, info.fps, s.sample_fps)
                if t > s.max_duration:
                    raise InputTooLarge(f"video runs past the {s.max_duration:.0f}s limit")
                if s.end is not None and t > s.end:
                    break
                if t + 1e-6 < next_t:
                    info.decode_seconds += time.perf_counter() - started
                    continue
                ok, frame = cap.retrieve()
                info.decode_seconds += time.perf_counter() - started
                if ok and frame is not None:
                    out.put((t, index, frame))  # blocks while the consumer is behind: not decode time
                    sampled += 1
                while next_t <= t + 1e-6:
                    next_t += step
            info.last_index = index
            out.put(_DONE)
        except Exception as exc:
            out.put(exc)

    def __iter__(self) -> Iterator[tuple[float, int, np.ndarray]]:
        frames: queue.Queue = queue.Queue(maxsize=8)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(frames, stop), daemon=True)
        producer.start()
        try:
            while (item := frames.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            while producer.is_alive():
                with contextlib.suppress(queue.Empty):
                    frames.get_nowait()
                producer.join(timeout=0.05)
            self.cap.release()
        if self.info.frames_decoded == 0:
            raise InvalidInput("no frame of the video could be decoded")
        info = self.info
        info.duration = info.duration or (info.last_index + 1) / (info.fps or self.sampling.sample_fps)
