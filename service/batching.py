"""Dynamic micro-batching: rows from concurrent requests share one model call, run off the event loop.

A job may bring its own work for the worker thread (``submit_work``): making its rows (decode, preprocess) before
the model call and its result from its outputs after it, so a request's CPU work and its model call take one
thread hop, and the event loop keeps only the HTTP side of the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from service.errors import ModelUnloaded

log = logging.getLogger(__name__)
T = TypeVar("T")
Outputs = dict[str, np.ndarray]


class BatcherClosed(ModelUnloaded):
    """The model behind this batcher was unloaded; the request may be retried."""

    def __init__(self, detail: str = "the model was unloaded while serving; retry") -> None:
        super().__init__(detail)


def _finished(job: _Job, outputs: Outputs) -> tuple[bool, Any]:
    """A job's ``finish`` of its outputs, or the exception it raised (which reaches only that job's caller)."""
    try:
        return True, job.finish(outputs)
    except Exception as exc:
        return False, exc


def _same(outputs: Outputs) -> Outputs:
    return outputs


@dataclass
class _Job:
    rows: Callable[[], np.ndarray]  # the job's input rows, made in the worker thread
    finish: Callable[[Outputs], Any]  # its result from its slice of every output, in the worker thread
    size: int  # rows it adds to a batch (counted against max_batch before they exist)
    future: asyncio.Future
    as_is: bool = False  # rows the model takes as they are sent (no second pass: a client's own tensors)
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class _Outcome:
    """What one worker-thread call gave back: each job's result or exception, and the model call's figures."""

    results: list[tuple[bool, Any]]
    rows: int = 0
    seconds: float = 0.0
    failure: Exception | None = None  # the model call's own failure (every job that reached it gets it)


class MicroBatcher:
    """Collects submitted row blocks until ``max_batch`` rows or ``max_wait_ms``, runs them as one call.

    Up to ``workers`` calls run at once, each in its own thread; a batch is collected as soon as a worker is
    free, so rows that arrive while every worker is busy join the next batch.
    """

    def __init__(
        self,
        fn: Callable[..., Outputs],
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int, float], None] | None = None,
        pending: Callable[[], int] | None = None,
        workers: int = 1,
    ) -> None:
        """``pending`` (optional) counts requests in flight: once every one has submitted, nobody else can join
        the batch, so it runs without waiting out ``max_wait_ms`` (a lone request pays no batching delay). ``fn``
        takes the batch, and where some of its rows were submitted ``as_is``, a second argument: the mask of the
        other rows (``Predictor.run``'s ``eligible``)."""
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.on_batch, self.pending = on_batch, pending
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="inference")
        self._free = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task] = set()
        self._running_jobs = 0  # jobs inside batches that are running now
        self._collecting: list[_Job] = []  # jobs taken off the queue into the batch being collected
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
        waiting, self._collecting = self._collecting, []  # a batch cut short while it was being collected
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(BatcherClosed())
        self._executor.shutdown(wait=False)

    async def submit(self, batch: np.ndarray, as_is: bool = False) -> Outputs:
        """Run ``batch`` (N rows) through the model together with whatever else is waiting (``as_is``: see
        ``_Job``)."""
        if self._closed:
            raise BatcherClosed()
        if len(batch) == 0:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, batch)
        return await self.submit_work(lambda: batch, _same, len(batch), as_is)

    async def submit_work(
        self, rows: Callable[[], np.ndarray], finish: Callable[[Outputs], T], size: int, as_is: bool = False
    ) -> T:
        """``finish`` of the model's outputs for ``rows()`` (``size`` rows, at least one), batched with whatever else
        is waiting; both run in the worker thread, and an exception from either reaches only this caller."""
        if self._closed:
            raise BatcherClosed()
        job = _Job(rows, finish, size, asyncio.get_running_loop().create_future(), as_is=as_is)
        if self.idle():
            return await self._run_alone(job)
        self.start()
        await self._queue.put(job)
        return await job.future

    def idle(self) -> bool:
        """Whether this is the only request in flight and nothing is queued or running: nobody can share its batch,
        so it skips the queue and the collecting task (one thread hop, no task switches). Callers with heavy work of
        their own (a photo's detection) hand it to the worker thread only then, so it never holds up others'
        batches."""
        return (
            self.pending is not None
            and self._queue.empty()
            and self._running_jobs == 0
            and not self._running
            and self.pending() <= 1
        )

    async def _run_alone(self, job: _Job) -> Any:
        self._running_jobs += 1  # rows submitted meanwhile wait for a worker as they would behind a batch
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self._executor, self._call, [job])
        finally:
            self._running_jobs -= 1
        self._observe(outcome)
        ok, value = outcome.results[0]
        if not ok:
            raise value
        return value

    def _call(self, jobs: list[_Job]) -> _Outcome:
        """In a worker thread: every job's rows, one model call over them all, every job's result."""
        outcome = _Outcome([(False, None)] * len(jobs))
        made: list[tuple[int, np.ndarray]] = []
        for i, job in enumerate(jobs):
            try:
                made.append((i, job.rows()))
            except Exception as exc:
                outcome.results[i] = (False, exc)
        if not made:
            return outcome
        if not any(len(x) for _, x in made):  # nothing to run (a photo without faces): no model call, no batch
            for i, _ in made:
                outcome.results[i] = _finished(jobs[i], {})
            return outcome
        started = time.perf_counter()
        try:
            outputs = self.fn(*self._inputs(jobs, made))
        except Exception as exc:
            outcome.failure = exc
            for i, _ in made:
                outcome.results[i] = (False, exc)
            return outcome
        outcome.rows, outcome.seconds = sum(len(x) for _, x in made), time.perf_counter() - started
        offset = 0
        for i, x in made:
            part = {k: v[offset : offset + len(x)] for k, v in outputs.items()} if len(made) > 1 else outputs
            offset += len(x)
            outcome.results[i] = _finished(jobs[i], part)
        return outcome

    @staticmethod
    def _inputs(jobs: list[_Job], made: list[tuple[int, np.ndarray]]) -> tuple:
        """``fn``'s arguments: the rows of every job, and where any job's go ``as_is``, the mask of the others."""
        x = np.concatenate([x for _, x in made]) if len(made) > 1 else made[0][1]
        if not any(jobs[i].as_is for i, _ in made):
            return (x,)
        return x, np.concatenate([np.full(len(rows), not jobs[i].as_is) for i, rows in made])

    def _observe(self, outcome: _Outcome) -> None:
        if self.on_batch and outcome.rows:
            self.on_batch(outcome.rows, outcome.seconds)

    async def _collect(self) -> list[_Job]:
        """The next batch. Rows that were already waiting when a worker came free (they queued behind a running
        batch) go at once with whatever else waits: they have had their batching delay, and a worker kept busy
        serves more than one kept waiting. Otherwise rows are collected until ``max_batch`` rows, ``max_wait`` or
        every request in flight has submitted."""
        backlog = not self._queue.empty()
        jobs = self._collecting = [await self._queue.get()]  # close() answers them if it cancels the collecting
        rows = jobs[0].size
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch:
            if self.pending is not None and self._queue.empty() and len(jobs) + self._running_jobs >= self.pending():
                break
            try:
                job = (
                    self._queue.get_nowait()
                    if self.max_wait == 0 or backlog
                    else await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.perf_counter()))
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            jobs.append(job)
            rows += job.size
        self._collecting = []
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
            self._running_jobs += len(jobs)
            # handed to the worker now, not when a task gets round to it: the answers of the batch before are
            # still being written on this loop meanwhile
            try:
                call = loop.run_in_executor(self._executor, self._call, jobs)
            except RuntimeError as exc:  # the executor was shut down under us: every job gets the error
                call = loop.create_future()
                call.set_exception(exc)
            task = loop.create_task(self._run(jobs, call))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, jobs: list[_Job], call: asyncio.Future) -> None:
        """Waits for one worker-thread call over the jobs, frees the worker (so the next batch starts before these
        answers are written), then gives each job's future its own result (or exception)."""
        try:
            try:
                outcome = await call
            except Exception as exc:  # the executor itself failed
                outcome = _Outcome([(False, exc)] * len(jobs), failure=exc)
        finally:
            self._running_jobs -= len(jobs)
            self._free.release()
        if outcome.failure is not None:
            log.error("batched inference failed", exc_info=outcome.failure)
        self._observe(outcome)
        for job, (ok, value) in zip(jobs, outcome.results, strict=True):
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
