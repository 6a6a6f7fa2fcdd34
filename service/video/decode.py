"""Reading a video: container sniffing, opening with its limits, and a decoder thread that hands over the frame
at or after each sampling time, so decoding overlaps the detection of the previous sample.

A frame that does not decode (a damaged stretch of the file) does not end the stream: OpenCV's ``grab()`` fails once
per unreadable packet and goes on with the next, so the decoder reads past failures to the end and records each run
of them as a ``Gap``. The end of the stream is a long run of failures: past the header's frame count, a short one
(``FAILED_RUN_AT_END``); before it, or without one, ``MAX_FAILED_RUN``. A clip of which too little decodes
(less than ``Sampling.min_readable_share`` of the analysed span's frames, compared as whole frame counts) is refused
rather than summarised from what is left; a ``start`` at or past the end is refused with the clip's duration.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import cv2
import numpy as np

from service.errors import InputTooLarge, InvalidInput, UnsupportedFormat

CONTAINERS = "mp4, mov, avi, webm, mkv or MPEG-TS (.ts, .mts, .m2ts)"
SNIFF_BYTES = 400  # what telling them apart reads: MPEG-TS needs three packets' sync bytes
FAILED_RUN_AT_END = 50  # failed grabs in a row, past the header's frame count, taken as the end (~5 us each)
# FFmpeg's decoding threads per video. One: decoding runs beside the scan's detection, and FFmpeg's default (one per
# core) spent 0.82 s of CPU on the benchmark clip's 900 frames against 0.54 s on one thread, time detection needs.
DECODE_THREADS = 1
MEASURED_INTERVALS = 25  # frame intervals timed from the stream when its header gives no usable frame rate
MAX_FAILED_RUN = 10_000  # failed grabs in a row taken as the end anywhere (400 s of 25 fps video unreadable)


def sniff_video(head: bytes) -> str | None:
    """Container from the first bytes (``SNIFF_BYTES`` of them): mp4/mov, avi, webm/mkv, MPEG-TS; None when
    unknown."""
    if head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    if _ts_packets(head, 0, 188) or _ts_packets(head, 4, 192):  # broadcast and CCTV .ts; camcorders' .mts
        return "ts"
    return None


def _ts_packets(head: bytes, first: int, size: int) -> bool:
    """Whether ``head`` starts with three MPEG-TS packets of ``size`` bytes (sync byte 0x47 at ``first``)."""
    return len(head) > first + 2 * size and all(head[first + k * size] == 0x47 for k in range(3))


def check_container(head: bytes) -> str:
    """The container of a video whose first bytes are ``head``; UnsupportedFormat for anything else."""
    kind = sniff_video(head)
    if kind is None:
        raise UnsupportedFormat(f"unsupported video container; send {CONTAINERS}")
    return kind


HANDLER_SCAN_BYTES = 8 << 20  # an unopened mp4's head and tail searched for its tracks' kinds


def unopened(path: str) -> InvalidInput:
    """Why a video did not open: an mp4/mov with sound tracks and no video track (a voice memo, an .m4a sent as
    video) is said to be that; anything else is an unsupported codec or a corrupt file."""
    try:
        with open(path, "rb") as f:
            head = f.read(HANDLER_SCAN_BYTES)
            f.seek(max(len(head), os.fstat(f.fileno()).st_size - HANDLER_SCAN_BYTES))
            tail = f.read()
    except OSError:
        head = tail = b""
    kinds = track_kinds(head + tail) if sniff_video(head[:SNIFF_BYTES]) == "mp4" else set()
    if "soun" in kinds and "vide" not in kinds:
        return InvalidInput("the file has no video stream, only sound; send a video")
    return InvalidInput("the video could not be opened: unsupported codec or corrupt file")


def track_kinds(data: bytes) -> set[str]:
    """The handler types (``vide``, ``soun``, ...) of the mp4 ``hdlr`` boxes in ``data``: each box's type is 12 bytes
    after its name (version and flags, and a reserved word, first)."""
    kinds, at = set(), data.find(b"hdlr")
    while at >= 0:
        kinds.add(data[at + 12 : at + 16].decode("latin-1"))
        at = data.find(b"hdlr", at + 4)
    return kinds


@dataclass(frozen=True)
class Sampling:
    """Which frames to hand over: one at or after each ``start + k / sample_fps`` up to ``end``; and how much of
    the analysed span must decode for the analysis to stand (``min_readable_share``)."""

    sample_fps: float
    start: float = 0.0
    end: float | None = None
    max_frames: int = 3000
    max_duration: float = 600.0
    min_readable_share: float = 0.0


@dataclass(frozen=True)
class Gap:
    """A run of frames that could not be decoded: ``[start, end)`` in seconds of the stream, and how many."""

    start: float
    end: float
    frames: int


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    duration: float  # from the header; completed from the stream when the header has none
    frame_count: int = 0  # from the header; 0 when it has none
    frames_decoded: int = 0
    last_index: int = -1
    decode_seconds: float = 0.0
    gaps: list[Gap] = field(default_factory=list)  # unreadable runs within the analysed span
    span: tuple[float, float] = (0.0, 0.0)  # the part of the stream that was read for the analysis, in seconds

    @property
    def frames_unreadable(self) -> int:
        return sum(g.frames for g in self.gaps)

    span_frames: int = 0  # frames in the analysed span, unreadable ones included

    @property
    def readable_share(self) -> float:
        """The share of the analysed span's frames that decoded (1.0 for an empty span)."""
        readable, total = self.readable_frames()
        return 1.0 if total <= 0 else readable / total

    def readable_frames(self) -> tuple[int, int]:
        """Frames of the analysed span that decoded, and all its frames: whole numbers, so a share is compared as
        the fraction it is (exactly half is half, not 0.4999999999999999)."""
        unreadable = self.frames_unreadable
        if self.span_frames <= 0:  # span not measured in frames: by time, to the millisecond
            length = round((self.span[1] - self.span[0]) * 1000)
            gaps = sum(round((g.end - g.start) * 1000) for g in self.gaps)
            return max(0, length - gaps), length
        total = max(self.span_frames, unreadable)
        return total - unreadable, total


def too_little_readable(info: VideoInfo, min_share: float) -> bool:
    """Whether less than ``min_share`` of the span's frames decoded (the rule: less is refused, exactly it is not)."""
    readable, total = info.readable_frames()
    need = Fraction(min_share).limit_denominator(10_000)
    return total > 0 and readable * need.denominator < need.numerator * total


def share_words(share: float) -> str:
    return "half" if Fraction(share).limit_denominator(10_000) == Fraction(1, 2) else f"{share:.0%}"


def past_the_end(start: float, duration: float) -> InvalidInput:
    """``start`` at or after the end of a clip of ``duration`` seconds: nothing to analyse, said as such."""
    return InvalidInput(
        f"start={start:g} s is at or past the end of the clip, which lasts {duration:.2f} s; "
        f"choose a start before {duration:.2f} s"
    )


def clip_gaps(gaps: list[Gap], start: float, end: float) -> list[Gap]:
    """The parts of ``gaps`` within ``[start, end)``, their frame counts cut in proportion."""
    kept = []
    for gap in gaps:
        lo, hi = max(gap.start, start), min(gap.end, end)
        if hi > lo:
            share = (hi - lo) / (gap.end - gap.start)
            kept.append(Gap(round(lo, 3), round(hi, 3), max(1, round(gap.frames * share))))
    return kept


def describe_gaps(gaps: list[Gap]) -> str:
    """``1.00-5.80 s, 9.00-10.00 s`` (the first five runs)."""
    shown = ", ".join(f"{g.start:.2f}-{g.end:.2f} s" for g in gaps[:5])
    return shown + (f" and {len(gaps) - 5} more" if len(gaps) > 5 else "")


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
        self.cap = cv2.VideoCapture(path, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
        if not self.cap.isOpened():
            raise unopened(path)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        duration = count / fps if fps and count > 0 else 0.0
        if duration > sampling.max_duration:
            self.cap.release()
            raise InputTooLarge(f"video lasts {duration:.1f}s; the limit is {sampling.max_duration:.0f}s")
        if duration > 0 and sampling.start >= duration:
            self.cap.release()
            raise past_the_end(sampling.start, duration)
        width, height = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        frame_count = int(count) if math.isfinite(count) and 0 < count < 1e9 else 0
        self.info = VideoInfo(fps, width, height, duration, frame_count)
        self.intervals: list[float] = []  # between the first frames' timestamps, where the header has no rate
        self.found: list[Gap] = []  # every unreadable run met, before clipping to the analysed span
        self.last_t: float | None = None  # the last frame grabbed
        self.read_until: float | None = None  # where reading stopped short of the end (end option, frame cap)
        self.ended, self.skipped, self.sampled = False, 0, 0

    @property
    def frame_step(self) -> float:
        """Seconds from one frame to the next: the header's rate; without one (none given, or 1000 and over: a
        container's time base, not a frame rate), the median interval between the first frames' timestamps; before
        any, the sampling's step."""
        if self.info.fps:
            return 1.0 / self.info.fps
        if self.intervals:
            return statistics.median(self.intervals)
        return 1.0 / self.sampling.sample_fps

    def _timed(self, t: float) -> None:
        """Note the interval from the last frame to this one (``t``), while the rate is being measured."""
        measuring = not self.info.fps and len(self.intervals) < MEASURED_INTERVALS
        if measuring and not self.skipped and self.last_t is not None and t > self.last_t:
            self.intervals.append(t - self.last_t)

    def _grab(self, index: int, stop: threading.Event) -> bool:
        """Advance one frame; on failure, go on past unreadable frames until one decodes, the stream has ended or
        the reader stopped (a cancelled job does not wait for a long damaged run to be read through).
        Returns whether a frame was grabbed; each failure counts as one frame (``index``) in a recorded gap."""
        cap, info, failed = self.cap, self.info, 0
        before = self.last_t
        while not cap.grab():
            if stop.is_set():
                return False
            failed += 1
            past_end = info.frame_count and index + failed >= info.frame_count
            if failed >= (FAILED_RUN_AT_END if past_end else MAX_FAILED_RUN):
                self.ended = True
                return False
        if failed:
            t = _timestamp(cap, index + failed, info.fps, self.sampling.sample_fps)
            start = 0.0 if before is None else before + self.frame_step
            self.found.append(Gap(start, max(t, start), failed))
        self.skipped = failed
        return True

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        s, info, cap = self.sampling, self.info, self.cap
        step, next_t, index, sampled = 1.0 / s.sample_fps, s.start, -1, 0
        try:
            while sampled < s.max_frames and not stop.is_set():
                started = time.perf_counter()
                if not self._grab(index + 1, stop):
                    break
                index += 1 + self.skipped
                info.frames_decoded += 1
                t = _timestamp(cap, index, info.fps, s.sample_fps)
                if t > s.max_duration:
                    raise InputTooLarge(f"video runs past the {s.max_duration:.0f}s limit")
                if s.end is not None and t > s.end:
                    self.read_until = s.end
                    break
                self._timed(t)
                self.last_t = t
                if t + 1e-6 < next_t:
                    info.decode_seconds += time.perf_counter() - started
                    continue
                ok, frame = cap.retrieve()
                info.decode_seconds += time.perf_counter() - started
                if ok and frame is not None:
                    out.put((t, index, frame))  # blocks while the consumer is behind: not decode time
                    sampled += 1
                    self.sampled = sampled
                while next_t <= t + 1e-6:
                    next_t += step
            info.last_index = index
            out.put(_DONE)
        except Exception as exc:
            out.put(exc)

    def _account(self) -> None:
        """The analysed span and the gaps within it; a trailing gap when the stream ended before the header's
        duration (its last frames did not decode). InvalidInput when too little of the span decoded."""
        info, s = self.info, self.sampling
        read_until = self.read_until or (self.last_t or 0.0) + self.frame_step
        if self.ended and info.duration > read_until + self.frame_step / 2:
            missing = max(1, round((info.duration - read_until) / self.frame_step))
            self.found.append(Gap(read_until, info.duration, missing))
            read_until = info.duration
        end = read_until if s.end is None else min(read_until, s.end)
        info.span = (s.start, max(s.start, end))
        info.gaps = clip_gaps(self.found, *info.span)
        info.span_frames = round((info.span[1] - info.span[0]) / self.frame_step)
        if info.gaps and too_little_readable(info, s.min_readable_share):
            readable, total = info.readable_frames()
            raise InvalidInput(
                f"only {readable * 100 // total}% of the analysed video decodes ({readable} of its {total} frames; "
                f"{info.frames_unreadable} unreadable at {describe_gaps(info.gaps)}); a clip of which less than "
                f"{share_words(s.min_readable_share)} decodes is refused, as its analysis would mean little "
                "(EMOTION_VIDEO__MIN_READABLE_SHARE)"
            )

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
        info.duration = info.duration or (info.last_index + 1) * self.frame_step
        if self.sampled == 0 and self.sampling.start > 0 and self.sampling.start >= info.duration:
            raise past_the_end(self.sampling.start, info.duration)  # a header without a duration said nothing
        self._account()
