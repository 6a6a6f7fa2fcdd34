"""What the API does with jobs, whichever backend runs them: take a clip in (checked before anything is queued),
report, list, cancel, and delete jobs and their files when asked or once they expire."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.config import MiB, Settings
from service.errors import StorageFull
from service.jobs.errors import JobStopping, QueueFull, QueueUnavailable
from service.jobs.model import FINAL, STATUSES, Job, new_id, utcnow
from service.jobs.store import JobStore
from service.metrics import Metrics
from service.options import Requested
from service.video.decode import FrameSampler, Sampling, past_the_end

log = logging.getLogger("service.jobs")
HOUSEKEEPING_S = 5.0  # metrics refresh; expiry is checked as often, or every quarter of the TTL when that is shorter


class JobQueue(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def enqueue(self, job_id: str) -> None: ...
    async def discard(self, job_id: str) -> None: ...
    async def workers_alive(self) -> int: ...


def probe_clip(path: Path, max_duration: float) -> float:
    """The clip's duration, once it is known to open, to be within ``max_duration`` and to have a decodable
    frame: the checks ``/predict/video`` makes while analysing, made here before a job is queued."""
    sampler = FrameSampler(str(path), Sampling(1.0, max_frames=1, max_duration=max_duration))
    frames = iter(sampler)
    next(frames, None)  # raises InvalidInput when no frame decodes
    frames.close()
    return sampler.info.duration


@contextlib.asynccontextmanager
async def reachable() -> AsyncIterator[None]:
    """Redis being down is the service's outage, not the request's fault: QueueUnavailable (503), not a 500."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.error("job store unreachable: %s", exc)
        raise QueueUnavailable("the job queue is unreachable; retry later") from exc


class JobService:
    def __init__(self, settings: Settings, store: JobStore, queue: JobQueue, metrics: Metrics) -> None:
        self.settings, self.store, self.queue, self.metrics = settings, store, queue, metrics
        self.ttl = settings.queue.job_ttl_s
        self.housekeeping: asyncio.Task | None = None
        self.changed = asyncio.Event()  # a job was submitted or cancelled here: refresh the gauges now
        metrics.known_job_statuses(STATUSES, sorted(FINAL))

    async def start(self) -> None:
        await self.queue.start()
        self.housekeeping = asyncio.create_task(self._housekeep())

    async def stop(self) -> None:
        if self.housekeeping is not None:
            self.housekeeping.cancel()
            await asyncio.gather(self.housekeeping, return_exceptions=True)
        await self.queue.stop()
        await self.store.close()

    async def admit(self) -> None:
        """Room for one more job, checked before its upload is kept: QueueFull with ``max_queued`` jobs waiting,
        StorageFull with the jobs folder's disk under ``min_free_bytes`` free."""
        queue = self.settings.queue
        async with reachable():
            waiting = (await self.store.counts()).get("queued", 0)
        if waiting >= queue.max_queued:
            raise QueueFull(f"{waiting} jobs are waiting to run, as many as the queue takes (max_queued); retry later")
        free = shutil.disk_usage(self.store.root).free
        if free < queue.min_free_bytes:
            raise StorageFull(
                f"the jobs folder's disk has {free / MiB:.0f} MB free, under the {queue.min_free_bytes / MiB:.0f} MB "
                "it keeps (min_free_bytes); retry once finished jobs expire or are deleted"
            )

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (new, empty) folder, for the upload to be spooled into."""
        job_id = new_id()
        folder = self.store.folder(job_id)
        folder.mkdir(parents=True)
        return job_id, folder

    def discard_folder(self, job_id: str) -> None:
        self.store.remove_folder(job_id)

    async def submit(self, job_id: str, upload: Path, model: str, version: str, requested: Requested) -> Job:
        """Probe the spooled clip (InvalidInput, InputTooLarge; a ``start`` at or past its end), then record the job
        and queue it."""
        duration = await asyncio.to_thread(probe_clip, upload, self.settings.queue.max_duration_s)
        if duration > 0 and requested.start >= duration:
            raise past_the_end(requested.start, duration)
        async with reachable():
            return await self._record(job_id, upload, model, version, requested, duration)

    async def _record(
        self, job_id: str, upload: Path, model: str, version: str, requested: Requested, duration: float
    ) -> Job:
        job = Job(
            id=job_id,
            model=model,
            version=version,
            options=dataclasses.asdict(requested),
            upload=upload.name,
            duration=duration,
        )
        await self.store.create(job)
        try:
            await self.queue.enqueue(job_id)
        except BaseException:
            await self.store.delete(job_id)
            raise
        self.changed.set()
        return job

    async def get(self, job_id: str) -> tuple[Job, str | None]:
        """The job and, once it succeeded, its result (the ``/predict/video`` body as JSON)."""
        async with reachable():
            job = await self.store.get(job_id)
        result = self.store.read_result(job_id) if job.status == "succeeded" else None
        return job, result

    async def page(self, offset: int, limit: int, status: str | None = None) -> tuple[list[Job], int]:
        async with reachable():
            return await self.store.page(offset, limit, status)

    async def end(self, job_id: str) -> Job:
        """``DELETE /jobs/{id}``: cancel a queued job (its clip deleted now) or a running one (its worker stops
        within a second and deletes the clip); delete an ended one with its result and files, so a result (which
        describes people) goes when its owner asks, not only when it expires. JobStopping while the worker of a
        job cancelled as it ran still has its clip. Returns the job's last state."""
        async with reachable():
            cancelled = await self._cancel(job_id)
            return cancelled if cancelled is not None else await self._delete(job_id)

    async def _cancel(self, job_id: str) -> Job | None:
        """The job cancelled, or None once it has ended."""
        was: list[Job] = []

        def change(job: Job) -> dict | None:
            if job.final:
                return None
            was.append(job)
            upload = job.upload if job.status == "running" else None
            return job.ended("cancelled", self.ttl, worker=job.worker, upload=upload)

        cancelled = await self.store.modify(job_id, change)
        if cancelled is None:
            return None
        await self.queue.discard(job_id)
        if was[-1].status == "queued":
            self.store.remove_file(job_id, was[-1].upload)
        self.metrics.observe_job_finished("cancelled")
        self.changed.set()
        return cancelled

    async def _delete(self, job_id: str) -> Job:
        """An ended job deleted: record, result, folder, queue keys."""
        job = await self.store.get(job_id)
        if self._stopping(job):
            raise JobStopping(f"job {job_id} was cancelled while running and its worker is still stopping; retry")
        await self.queue.discard(job_id)
        await self.store.delete(job_id)
        self.changed.set()
        return job

    def _stopping(self, job: Job) -> bool:
        """Whether the worker of a job cancelled as it ran may still write to its folder: its clip is there (the
        worker deletes it last) and its claim has not lapsed (a worker that died leaves the clip to the sweep)."""
        if job.status != "cancelled" or not job.upload or job.finished is None:
            return False
        recent = (utcnow() - job.finished).total_seconds() < self.settings.queue.lease_s
        return recent and (self.store.folder(job.id) / job.upload).exists()

    async def sweep(self) -> int:
        """Delete expired jobs: record, result, upload, queue keys. Returns how many."""
        expired = await self.store.expired(utcnow())
        for job_id in expired:
            await self.queue.discard(job_id)
            await self.store.delete(job_id)
        if expired:
            log.info("deleted %d expired job(s)", len(expired))
        return len(expired)

    async def observe(self) -> None:
        counts = await self.store.counts()
        self.metrics.observe_jobs({s: counts.get(s, 0) for s in STATUSES}, await self.queue.workers_alive())

    async def _housekeep(self) -> None:
        period = max(0.2, min(HOUSEKEEPING_S, self.ttl / 4))
        while True:
            for step in (self.sweep, self.observe):
                try:
                    await step()
                except Exception:
                    log.warning("job housekeeping: %s failed", step.__name__, exc_info=True)
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), period)
