"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any, Literal, TypeVar, Unpack

import httpx

from emotion_client import calls
from emotion_client.base import ClientBase, ClientOptions
from emotion_client.calls import Call, ImageOptions, VideoOptions
from emotion_client.errors import JobFailed
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
from emotion_client.stream import Frame, Pace, SessionOptions, Timestamps
from emotion_client.stream_messages import StreamOptions
from emotion_client.stream_sync import Stream, StreamSession
from emotion_client.uploads import ImageInput, VideoInput

T = TypeVar("T")


class EmotionClient(ClientBase):
    """A blocking client for the emotion service; use it as a context manager (or call ``close``).

    >>> with EmotionClient("http://localhost:8000") as client:
    ...     faces = client.predict_image("photo.jpg").faces
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.Client(base_url=self.url, headers=self.headers)

    def __enter__(self) -> EmotionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call) -> httpx.Response:
        """The answer to ``call`` after retries; EmotionAPIError or EmotionConnectionError otherwise."""
        attempt = 0
        while True:
            try:
                with ExitStack() as stack:
                    response = self._http.request(call.method, call.path, **self._request(call, stack))
            except httpx.TransportError as exc:
                delay = self._after_failure(call, attempt, exc)
            else:
                delay = self._after_answer(call, attempt, response)
                if delay is None:
                    return response
            time.sleep(delay)
            attempt += 1

    def json(self, call: Call) -> Any:
        """The answer's JSON exactly as the server sent it."""
        return self._decode(self.send(call))

    def call(self, call: Call[T]) -> T:
        """The answer as its typed schema."""
        return call.parse(self.json(call))

    def predict_face(
        self, image: ImageInput, *, model: str | None = None, version: str | None = None
    ) -> FacePredictionResponse:
        """An already-cropped face (path, encoded bytes or a BGR numpy image): the whole image is the face."""
        return self.call(calls.predict_face(image, model, version))

    def predict_image(self, image: ImageInput, **options: Unpack[ImageOptions]) -> ImagePredictionResponse:
        """Every face in a photo (path, encoded bytes or a BGR numpy image), largest first."""
        return self.call(calls.predict_image(image, **options))

    def predict_video(self, video: VideoInput, **options: Unpack[VideoOptions]) -> VideoPredictionResponse:
        """Per-face timelines for a clip (path, bytes or binary file), in one request."""
        return self.call(calls.predict_video(video, **options))

    def models(self) -> ModelList:
        return self.call(calls.models())

    def model(self, name: str, version: str | None = None) -> ModelInfo:
        return self.call(calls.model(name, version))

    def health(self, probe: Literal["live", "ready"] = "ready") -> Health:
        return self.call(calls.health(probe))

    def submit_video_job(self, video: VideoInput, **options: Unpack[VideoOptions]) -> JobAccepted:
        """Queue a clip for analysis in the background (the ``predict_video`` options); returns the queued job."""
        return self.call(calls.submit_video_job(video, **options))

    def job(self, job_id: str) -> Job:
        return self.call(calls.job(job_id))

    def cancel_job(self, job_id: str) -> JobInfo | None:
        """Cancel a queued or running job; its last state. (The same call deletes an ended job: ``delete_job``.)"""
        return self.call(calls.cancel_job(job_id))

    def delete_job(self, job_id: str) -> JobInfo | None:
        """Delete an ended job with its result and files (later calls get NotFound); its last state. A job cancelled
        while it ran is refused for the second its worker takes to stop (a 409 ``EmotionAPIError``)."""
        return self.call(calls.cancel_job(job_id))

    def jobs(self, *, limit: int | None = None, offset: int | None = None, status: JobStatus | None = None) -> JobPage:
        """A page of jobs, newest first (``next_offset`` is the next page's ``offset``); ``status`` filters."""
        return self.call(calls.jobs(limit, offset, status))

    def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        progress: Callable[[Job], object] | None = None,
    ) -> Job:
        """Poll until the job is final; ``progress(job)`` after every poll. Returns the succeeded job (its
        ``result`` set); raises JobFailed when it failed or was cancelled, TimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.job(job_id)
            if progress is not None:
                progress(current)
            if current.done:
                if current.status != "succeeded":
                    raise JobFailed(current)
                return current
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"job {job_id} still {current.status} after {timeout} s")
            time.sleep(poll_interval)

    def stream_session(self, **options: Unpack[SessionOptions]) -> StreamSession:
        """A live session on ``WS /stream`` to drive by hand (``send``, ``receive``, ``summary``, ``close``); use it
        as a context manager. Opening sends the options and waits for ``ready`` (``session.ready``)."""
        return StreamSession(self._stream_target(), StreamOptions(**options))

    def stream(
        self,
        frames: Iterable[Frame],
        *,
        timestamps: Timestamps = None,
        pace: Pace = None,
        **options: Unpack[SessionOptions],
    ) -> Stream:
        """Frames in (encoded bytes, paths or BGR numpy images, sent as JPEG), ``StreamResult``s out, each face with
        a track id; ``.summary`` holds the final summary once iteration ends.

        Frames are sent on a thread while results are read, so a fast source is not slowed by replies: the server
        analyses the newest frame it has and drops the rest (``result.skipped``), so results stay current. ``pace``:
        None sends as fast as ``frames`` yields, a number at most that many frames per second (a recording in real
        time), ``"lockstep"`` each frame after the previous one's answer (every frame analysed). ``timestamps(i)``
        gives frame ``i``'s capture time in seconds (default: the server's clock)."""
        target, opts = self._stream_target(), StreamOptions(**options)  # bad options fail here, not on a thread
        return Stream(lambda: StreamSession(target, opts), frames, timestamps=timestamps, pace=pace)
