"""Every API call as data: method, path, query, body, the statuses that mean success and how to read the answer.

Both clients (sync and async) run these ``Call`` objects through their own retry loop, so the two cannot
disagree about a route; the CLI runs the same calls and prints the answer's JSON untouched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import quote

from emotion_client.errors import EmotionAPIError
from emotion_client.schemas import (
    FacePredictionResponse,
    Health,
    ImagePredictionResponse,
    Job,
    JobAccepted,
    JobInfo,
    JobPage,
    JobStatus,
    ModelInfo,
    ModelList,
    VideoPredictionResponse,
)
from emotion_client.uploads import Body, ImageInput, VideoInput, image_body, video_body

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    body: Body | None = None
    ok: tuple[int, ...] = (200,)
    retry_statuses: frozenset[int] = RETRY_STATUSES
    idempotent: bool = True  # safe to send again after the connection dropped mid-request
    long: bool = False  # a video upload: the long timeout applies


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: ``Retry-After`` when the server sends one, else exponential backoff with
    jitter (``backoff * 2**attempt``), never longer than ``max_delay`` (a longer ``Retry-After`` fails at once)."""

    retries: int = 3
    backoff: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_delay else None
        return min(self.max_delay, self.backoff * 2**attempt * random.uniform(0.5, 1.0))


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def api_error(status: int, content: bytes, headers: Any, method: str, url: str) -> EmotionAPIError:
    """The client exception for an error answer, with the server's ``detail`` (or OIP ``error``) when it sent JSON."""
    import json

    try:
        body = json.loads(content)
        detail = body.get("detail", body.get("error", body)) if isinstance(body, dict) else body
    except ValueError:
        detail = content.decode("utf-8", "replace").strip() or f"HTTP {status}"
    return EmotionAPIError(status, detail, retry_after(headers.get("retry-after")), method, url)


class ImageOptions(TypedDict, total=False):
    """``/predict/image`` query options."""

    model: str | None
    version: str | None
    max_faces: int | None
    min_face_size: int | None


class VideoOptions(TypedDict, total=False):
    """``/predict/video`` (and ``/jobs/video``) query options, and the upload's file name."""

    model: str | None
    version: str | None
    sample_fps: float | None
    max_frames: int | None
    start: float | None
    end: float | None
    smoothing: float | None
    max_faces: int | None
    min_face_size: int | None
    filename: str | None


def _options(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _segment(value: str) -> str:
    return quote(str(value), safe="")


# --- the routes ----------------------------------------------------------------------------------------------


def predict_face(image: ImageInput, model: str | None = None, version: str | None = None) -> Call:
    return Call(
        "POST", "/predict/face", FacePredictionResponse.model_validate, _options(model=model, version=version),
        image_body(image),
    )  # fmt: skip


def predict_image(image: ImageInput, **options: Unpack[ImageOptions]) -> Call:
    body = image_body(image)
    return Call("POST", "/predict/image", ImagePredictionResponse.model_validate, _options(**options), body)


def predict_video(video: VideoInput, **options: Unpack[VideoOptions]) -> Call:
    body = video_body(video, options.pop("filename", None))
    return Call("POST", "/predict/video", VideoPredictionResponse.model_validate, _options(**options), body, long=True)


def models() -> Call:
    return Call("GET", "/models", ModelList.model_validate)


def model(name: str, version: str | None = None) -> Call:
    return Call("GET", f"/models/{_segment(name)}", ModelInfo.model_validate, _options(version=version))


def health(probe: Literal["live", "ready"] = "ready") -> Call:
    """A probe's answer; a not-ready server's 503 is an answer (status ``loading`` or ``failed``), not an error."""
    if probe not in ("live", "ready"):
        raise ValueError(f"probe is 'live' or 'ready', not {probe!r}")
    return Call("GET", f"/health/{probe}", Health.model_validate, ok=(200, 503), retry_statuses=frozenset())


def submit_video_job(video: VideoInput, **options: Unpack[VideoOptions]) -> Call:
    """A job for a video (202 with the job's id); a submission is not repeated after a dropped connection."""
    body = video_body(video, options.pop("filename", None))
    return Call(
        "POST", "/jobs/video", JobAccepted.model_validate, _options(**options), body,
        ok=(200, 201, 202), idempotent=False, long=True,
    )  # fmt: skip


def job(job_id: str) -> Call:
    return Call("GET", f"/jobs/{_segment(job_id)}", Job.model_validate)


def _job_or_none(body: Any) -> JobInfo | None:
    return JobInfo.model_validate(body) if isinstance(body, dict) and "status" in body else None


def cancel_job(job_id: str) -> Call:
    return Call("DELETE", f"/jobs/{_segment(job_id)}", _job_or_none, ok=(200, 202, 204))


def jobs(limit: int | None = None, offset: int | None = None, status: JobStatus | None = None) -> Call:
    """A page of jobs, newest first; ``status`` filters."""
    return Call("GET", "/jobs", JobPage.model_validate, _options(limit=limit, offset=offset, status=status))
