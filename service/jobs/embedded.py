"""The embedded backend's queue: jobs run on a small pool of tasks inside the API process (no Redis needed).

The queue is a folder of marker files (``<jobs_dir>/.queue/<id>``, holding the time the job may start), so queued
jobs survive a restart and any process sharing the folder can enqueue. One process at a time runs jobs: the one
holding ``<jobs_dir>/.embedded.lock``; on taking it, jobs left ``running`` by a process that died are queued again
(that try counted) and queued jobs without a marker get one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

from service.files import atomic_write
from service.jobs.runner import JobRunner
from service.jobs.store import FileJobStore

log = logging.getLogger("service.jobs")
POLL_S = 1.0  # how often an idle pool looks for jobs enqueued by another process
RETRY_DELAY_S = 1.0  # times the try number: a job that raised waits this long before its next try


class EmbeddedQueue:
    def __init__(self, store: FileJobStore, runner: JobRunner, workers: int) -> None:
        self.store, self.runner, self.workers = store, runner, workers
        self.markers = store.root / ".queue"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.lock_path = store.root / ".embedded.lock"
        self.lock_fd: int | None = None
        self.wake = asyncio.Event()
        self.pick = asyncio.Lock()
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._lead())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = None

    async def enqueue(self, job_id: str, delay: float = 0.0) -> None:
        atomic_write(self.markers / job_id, str(time.time() + delay))
        self.wake.set()

    async def discard(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.markers / job_id).unlink()

    async def workers_alive(self) -> int:
        return self.workers if self.lock_fd is not None else 0

    async def _lead(self) -> None:
        """Wait to hold the lock (another API process may have it), recover, then run the pool."""
        while not self._try_lock():
            await asyncio.sleep(POLL_S * 2)
        await self._recover()
        pool = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*pool)
        finally:
            for task in pool:
                task.cancel()
            await asyncio.gather(*pool, return_exceptions=True)

    def _try_lock(self) -> bool:
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.lock_fd = fd
        return True

    async def _recover(self) -> None:
        for status in ("running", "queued"):
            jobs, _ = await self.store.page(0, 1 << 30, status)
            for job in jobs:
                if status == "running":
                    await self.store.modify(job.id, lambda j: {"status": "queued", "worker": None, "progress": 0.0})
                    log.warning("job %s was running when its process stopped: queued again", job.id)
                if not (self.markers / job.id).exists():
                    await self.enqueue(job.id)

    async def _work(self) -> None:
        while True:
            job_id = await self._next()
            try:
                outcome = await self.runner.run(job_id)
            except asyncio.CancelledError:
                await self.enqueue(job_id)  # the runner handed it back: the next start picks it up
                raise
            except Exception:
                log.exception("job %s: the runner failed", job_id)
                continue
            if outcome == "retry":
                tries = (await self.store.get(job_id)).tries
                await self.enqueue(job_id, RETRY_DELAY_S * tries)

    async def _next(self) -> str:
        """The oldest due marker, removed (ids sort by creation time); waits until one is there."""
        while True:
            async with self.pick:
                now = time.time()
                for path in sorted(self.markers.iterdir()):
                    if path.name.startswith(".") or _due(path) > now:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        return path.name
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_S)


def _due(path: Path) -> float:
    try:
        return float(path.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0.0
