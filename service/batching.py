"""Dynamic micro-batching: rows from concurrent requests share one model call, run off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.errors import ModelUnloaded

log = logging.getLogger(__name__)


class BatcherClosed(ModelUnloaded):
    """The model behind this batcher was unloaded; the request may be retried."""

    def __init__(self, detail: str = "the model was unloaded while serving; retry") -> None:
        super().__init__(detail)


@dataclass
class _Job:
    batch: np.ndarray
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Collects submitted row blocks until ``max_batch`` rows or ``max_wait_ms``, runs them as one call.

    Up to ``workers`` calls run at once, each in its own thread; a batch is collected as soon as a worker is
    free, so rows that arrive while every worker is busy join the next batch.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], dict[str, np.ndarray]],
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int, float], None] | None = None,
        pending: Callable[[], int] | None = None,
        workers: int = 1,
    ) -> None:
        """``pending`` (optional) counts requests in flight: once every one has submitted, nobody else can join
        the batch, so it runs without waiting out ``max_wait_ms`` (a lone request pays no batching delay)."""
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.on_batch, self.pending = on_batch, pending
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self._free = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task] = set()
        self._running_jobs = 0  # jobs inside batches that are running now
        self._task: asyncio.Task | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._running, return_exceptions=True)  # batches already running finish
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(BatcherClosed())
        self._executor.shutdown(wait=False)

    async def submit(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``batch`` (N rows) through the model together with whatever else is waiting."""
        if self._closed:
            raise BatcherClosed()
        if len(batch) == 0:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, batch)
        if self._alone():
            return await self._run_alone(batch)
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(batch, future))
        return await future

    def _alone(self) -> bool:
        """Whether this is the only request in flight and nothing is queued or running: nobody can share its batch,
        so it skips the queue and the collecting task (one thread hop, no task switches)."""
        return (
            self.pending is not None
            and self._queue.empty()
            and self._running_jobs == 0
            and not self._running
            and self.pending() <= 1
        )

    async def _run_alone(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._running_jobs += 1  # rows submitted meanwhile wait for a worker as they would behind a batch
        try:
            started = time.perf_counter()
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, batch)
        finally:
            self._running_jobs -= 1
        if self.on_batch:
            self.on_batch(len(batch), time.perf_counter() - started)
        return outputs

    async def _collect(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        rows = len(jobs[0].batch)
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch:
            if self.pending is not None and self._queue.empty() and len(jobs) + self._running_jobs >= self.pending():
                break
            try:
                job = (
                    self._queue.get_nowait()
                    if self.max_wait == 0
                    else await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.perf_counter()))
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            jobs.append(job)
            rows += len(job.batch)
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()
            try:
                jobs = [j for j in await self._collect() if not j.future.cancelled()]
            except BaseException:
                self._free.release()
                raise
            if not jobs:
                self._free.release()
                continue
            task = loop.create_task(self._run(jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, jobs: list[_Job]) -> None:
        """One model call over the jobs' rows; each job's future gets its own slice of every output."""
        self._running_jobs += len(jobs)
        try:
            batch = np.concatenate([j.batch for j in jobs])
            started = time.perf_counter()
            try:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, batch)
            except Exception as exc:
                log.exception("batched inference failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            if self.on_batch:
                self.on_batch(len(batch), time.perf_counter() - started)
            offset = 0
            for job in jobs:
                n = len(job.batch)
                if not job.future.done():
                    job.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
                offset += n
        finally:
            self._running_jobs -= len(jobs)
            self._free.release()
