"""The asyncio client: the same calls as EmotionClient, awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterable, Callable, Iterable
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
from emotion_client.stream_aio import AsyncStream, AsyncStreamSession
from emotion_client.stream_messages import StreamOptions
from emotion_client.uploads import ImageInput, VideoInput

T = TypeVar("T")


class AsyncEmotionClient(ClientBase):
    """An asyncio client for the emotion service; use it as an async context manager (or await ``close``).

    >>> async with AsyncEmotionClient("http://localhost:8000") as client:
    ...     faces = (await client.predict_image("photo.jpg")).faces
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers)

    async def __aenter__(self) -> AsyncEmotionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call) -> httpx.Response:
        """The answer to ``call`` after retries; EmotionAPIError or EmotionConnectionError otherwise."""
        attempt = 0
        while True:
            try:
                with ExitStack() as stack:
                    response = await self._http.request(call.method, call.path, **self._request(call, stack))
            except httpx.TransportError as exc:
                delay = self._after_failure(call, attempt, exc)
            else:
                delay = self._after_answer(call, attempt, response)
                if delay is None:
                    return response
            await asyncio.sleep(delay)
            attempt += 1

    async def json(self, call: Call) -> Any:
        """The answer's JSON exactly as the server sent it."""
        return self._decode(await self.send(call))

    async def call(self, call: Call[T]) -> T:
        """The answer as its typed schema."""
        return call.parse(await self.json(call))

    async def predict_face(
        self, image: ImageInput, *, model: str | None = None, version: str | None = None
    ) -> FacePredictionResponse:
        """An already-cropped face (path, encoded bytes or a BGR numpy image): the whole image is the face."""
        return await self.call(calls.predict_face(image, model, version))

    async def predict_image(self, image: ImageInput, **options: Unpack[ImageOptions]) -> ImagePredictionResponse:
        """Every face in a photo (path, encoded bytes or a BGR numpy image), largest first."""
        return await self.call(calls.predict_image(image, **options))

    async def predict_video(self, video: VideoInput, **options: Unpack[VideoOptions]) -> VideoPredictionResponse:
        """Per-face timelines for a clip (path, bytes or binary file), in one request."""
        return await self.call(calls.predict_video(video, **options))

    async def models(self) -> ModelList:
        return await self.call(calls.models())

    async def model(self, name: str, version: str | None = None) -> ModelInfo:
        return await self.call(calls.model(name, version))

    async def health(self, probe: Literal["live", "ready"] = "ready") -> Health:
        return await self.call(calls.health(probe))

    async def submit_video_job(self, video: VideoInput, **options: Unpack[VideoOptions]) -> JobAccepted:
        """Queue a clip for analysis in the background (the ``predict_video`` options); returns the queued job."""
        return await self.call(calls.submit_video_job(video, **options))

    async def job(self, job_id: str) -> Job:
        return await self.call(calls.job(job_id))

    async def cancel_job(self, job_id: str) -> JobInfo | None:
        """Cancel a queued or running job; its last state. (The same call deletes an ended job: ``delete_job``.)"""
        return await self.call(calls.cancel_job(job_id))

    async def delete_job(self, job_id: str) -> JobInfo | None:
        """Delete an ended job with its result and files (later calls get NotFound); its last state. A job cancelled
        while it ran is refused for the second its worker takes to stop (a 409 ``EmotionAPIError``)."""
        return await self.call(calls.cancel_job(job_id))

    async def jobs(
        self, *, limit: int | None = None, offset: int | None = None, status: JobStatus | None = None
    ) -> JobPage:
        """A page of jobs, newest first (``next_offset`` is the next page's ``offset``); ``status`` filters."""
        return await self.call(calls.jobs(limit, offset, status))

    async def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        progress: Callable[[Job], object] | None = None,
    ) -> Job:
        """Poll until the job is final; ``progress(job)`` (a function or coroutine
        function) after every poll. Returns the succeeded job (its
        ``result`` set); raises JobFailed when it failed or was cancelled, TimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = await self.job(job_id)
            if progress is not None and inspect.isawaitable(outcome := progress(current)):
                await outcome
            if current.done:
                if current.status != "succeeded":
                    raise JobFailed(current)
                return current
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"job {job_id} still {current.status} after {timeout} s")
            await asyncio.sleep(poll_interval)

    async def stream_session(self, **options: Unpack[SessionOptions]) -> AsyncStreamSession:
        """A live session on ``WS /stream`` to drive by hand (``send``, ``receive``, ``summary``, ``close``,
        awaited): ``async with await client.stream_session() as session``. Opening waits for ``ready``."""
        return await AsyncStreamSession.open(self._stream_target(), StreamOptions(**options))

    def stream(
        self,
        frames: Iterable[Frame] | AsyncIterable[Frame],
        *,
        timestamps: Timestamps = None,
        pace: Pace = None,
        **options: Unpack[SessionOptions],
    ) -> AsyncStream:
        """``EmotionClient.stream`` as an async iterator: ``async for result in client.stream(frames)``. ``frames``
        may be a sync iterable (read on a worker thread, so a blocking camera does not stall the loop) or an async
        one; a task sends them while results are read, because the server keeps only the newest frame it cannot
        analyse yet (``result.skipped``). ``async with client.stream(...) as results`` closes the session with its
        summary when leaving early; ``.summary`` holds the final summary."""
        target, opts = self._stream_target(), StreamOptions(**options)
        return AsyncStream(lambda: AsyncStreamSession.open(target, opts), frames, timestamps=timestamps, pace=pace)
