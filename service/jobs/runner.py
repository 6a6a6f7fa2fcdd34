"""Runs one job through the video pipeline, wherever it runs (the API's embedded pool or a worker process):
claim it, count the try, analyse with progress and cancellation, store the result or the reason it failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from service.config import Settings
from service.errors import ModelNotFound, ModelUnavailable, ServiceError
from service.jobs.errors import JobCancelled, JobNotFound
from service.jobs.model import RESULT_FILE, Job, Status, utcnow
from service.jobs.store import JobStore
from service.metrics import Metrics
from service.options import VideoCaps, resolve_options
from service.pipelines import Pipelines
from service.registry import ModelRegistry
from service.schemas import video_response

log = logging.getLogger("service.jobs")
Outcome = Literal["done", "retry", "skipped"]
Renew = Callable[[], Awaitable[Any]]  # keeps the queue's claim on a running job alive
MONITOR_S = 0.5  # how often a running job writes its progress, looks for a cancellation and renews its claim
LOST = "its worker stopped while running it (killed, out of memory or crashed)"


@dataclass
class Tracker:
    """Shared between the analysis thread (which sets ``progress`` and raises once ``cancel`` is set) and the
    event loop (which stores progress and sets ``cancel``)."""

    start: float
    span: float
    cancel: threading.Event
    progress: float = 0.0

    def __call__(self, t: float) -> None:
        if self.cancel.is_set():
            raise JobCancelled
        if self.span > 0:
            self.progress = min(0.99, max(0.0, (t - self.start) / self.span))


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        registry: ModelRegistry,
        pipelines: Pipelines,
        metrics: Metrics,
        worker_id: str,
    ) -> None:
        self.settings, self.queue = settings, settings.queue
        self.store, self.registry, self.pipelines, self.metrics = store, registry, pipelines, metrics
        self.worker_id = worker_id

    async def run(self, job_id: str, renew: Renew | None = None) -> Outcome:
        """``done`` (succeeded, failed or cancelled), ``retry`` (an unexpected error, tries left) or ``skipped``
        (cancelled or ended before it started)."""
        job = await self.store.modify(job_id, self._claim)
        if job is None:
            return "skipped"
        if job.tries > self.queue.max_tries:
            reason = f"gave up after {self.queue.max_tries} tries: {job.error or LOST}"
            await self._end(job, "failed", error=reason, tries=self.queue.max_tries)  # this start ran nothing
            return "done"
        tracker = self._tracker(job)
        monitor = asyncio.create_task(self._monitor(job, tracker, renew))
        try:
            return await self._execute(job, tracker)
        except asyncio.CancelledError:  # the worker is shutting down: hand the job back, this try not counted
            tracker.cancel.set()
            await asyncio.shield(self._release(job))
            raise
        finally:
            tracker.cancel.set()
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)

    def _claim(self, job: Job) -> dict[str, Any] | None:
        """Queued, or running on a worker whose claim lapsed (the queue hands it over only then)."""
        if job.status not in ("queued", "running"):
            return None
        started = {"status": "running", "started": utcnow(), "worker": self.worker_id, "progress": 0.0}
        return {**started, "tries": job.tries + 1}

    def _tracker(self, job: Job) -> Tracker:
        opts = job.requested()
        end = min(opts.end, job.duration) if opts.end is not None and job.duration else opts.end or job.duration
        return Tracker(opts.start, max(0.0, end - opts.start), threading.Event())

    async def _execute(self, job: Job, tracker: Tracker) -> Outcome:
        try:
            async with asyncio.timeout(self.queue.job_timeout_s):
                result = await self._analyse(job, tracker)
        except JobCancelled:
            self.store.remove_file(job.id, job.upload)
            return "done"
        except TimeoutError:
            await self._end(job, "failed", error=f"the job ran past the {self.queue.job_timeout_s:.0f}s job limit")
        except ModelNotFound as exc:
            await self._end(job, "failed", error=self._no_model(job, exc))
        except ServiceError as exc:
            if isinstance(exc, ModelUnavailable):
                return await self._retry_or_fail(job, exc.detail)
            await self._end(job, "failed", error=exc.detail)
        except Exception as exc:
            log.exception("job %s failed on try %d", job.id, job.tries)
            return await self._retry_or_fail(job, f"{type(exc).__name__}: {exc}")
        else:
            self.store.write_result(job.id, result)
            await self._end(job, "succeeded", progress=1.0)
        return "done"

    async def _cancelled_late(self, job: Job) -> None:
        """The job was cancelled after its scan, while its tracks were built or its result written: no progress
        call was left to stop it, so its result and clip go here. A job another worker took over keeps both."""
        with contextlib.suppress(JobNotFound):
            if (await self.store.get(job.id)).status != "cancelled":
                return
        self.store.remove_file(job.id, RESULT_FILE)
        self.store.remove_file(job.id, job.upload)

    def _no_model(self, job: Job, exc: ModelNotFound) -> str:
        """Why a job for a model this runner's store lacks failed, and the fix (a shared queue or another store)."""
        log.error("job %s is for %s:%s, which this worker's store lacks: %s", job.id, job.model, job.version, exc)
        return (
            f"worker {self.worker_id} has no model {job.model}:{job.version} ({exc.detail}): the API and its workers "
            "must serve one model store (EMOTION_STORE_PATH), and deployments sharing a Redis each need their own "
            "EMOTION_QUEUE__NAME"
        )

    async def _analyse(self, job: Job, tracker: Tracker) -> str:
        """The video pipeline on the job's clip with the job's caps; the response body as JSON."""
        opts = resolve_options(self.settings, job.requested(), caps=VideoCaps.job(self.settings))
        model = await self.registry.get(job.model, job.version)
        path = str(self.store.folder(job.id) / (job.upload or ""))
        result = await self.pipelines.video.analyse(path, model, opts, progress=tracker)
        return video_response(result).model_dump_json()

    async def _monitor(self, job: Job, tracker: Tracker, renew: Renew | None) -> None:
        """Every half second: renew the claim, store progress, and stop the analysis once the job is no longer
        this worker's to run (cancelled, or deleted)."""
        stored = 0.0
        while True:
            try:
                if renew is not None:
                    await renew()
                now = await self.store.get(job.id)
                progress = tracker.progress
                if not self._mine(now):
                    tracker.cancel.set()
                elif progress != stored:
                    await self.store.modify(job.id, lambda j, p=progress: {"progress": p} if self._mine(j) else None)
                    stored = progress
            except JobNotFound:
                tracker.cancel.set()
            except Exception:  # a Redis hiccup must not end the renewals: the job would be handed to another worker
                log.warning("job %s: monitor step failed", job.id, exc_info=True)
            await asyncio.sleep(MONITOR_S)

    def _mine(self, job: Job) -> bool:
        return job.status == "running" and job.worker == self.worker_id

    async def _end(self, job: Job, status: Status, **fields: Any) -> bool:
        """End the job if it is still this try's to end (not cancelled, not taken over); then its clip goes."""
        fields = {"upload": None, "worker": None, "error": None, **fields}
        ended = await self.store.modify(
            job.id,
            lambda j: (
                j.ended(status, self.queue.job_ttl_s, **fields)
                if j.status in ("queued", "running") and j.tries == job.tries
                else None
            ),
        )
        if ended is None:
            await self._cancelled_late(job)
            return False
        self.store.remove_file(job.id, job.upload)
        seconds = (ended.finished - job.started).total_seconds() if job.started and ended.finished else None
        self.metrics.observe_job_finished(status, seconds)
        log.info("job %s %s after %d tries%s", job.id, status, job.tries, f": {ended.error}" if ended.error else "")
        return True

    async def _retry_or_fail(self, job: Job, reason: str) -> Outcome:
        if job.tries >= self.queue.max_tries:
            await self._end(job, "failed", error=f"failed {job.tries} times; last error: {reason}")
            return "done"
        back = {"status": "queued", "worker": None, "error": reason, "progress": 0.0}
        if await self.store.modify(job.id, lambda j: back if self._mine(j) else None) is None:
            await self._cancelled_late(job)
            return "done"
        return "retry"

    async def _release(self, job: Job) -> None:
        back = {"status": "queued", "worker": None, "progress": 0.0}
        with contextlib.suppress(Exception):
            await self.store.modify(job.id, lambda j: {**back, "tries": j.tries - 1} if self._mine(j) else None)
