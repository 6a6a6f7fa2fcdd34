"""The micro-batcher's lone-request path: one request in flight runs in one executor hop, without the queue or the
collecting task; requests that arrive meanwhile are still batched together behind it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from service.batching import MicroBatcher


def test_a_lone_request_skips_the_queue_and_the_collecting_task():
    calls: list[int] = []
    batches: list[int] = []

    def double(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        return {"y": batch * 2}

    async def scenario():
        batcher = MicroBatcher(double, 64, 50, on_batch=lambda n, _: batches.append(n), pending=lambda: 1)
        out = await batcher.submit(np.ones((2, 3), np.float32))
        started = batcher._task is not None
        await batcher.close()
        return out, started

    out, started = asyncio.run(scenario())
    assert not started and calls == [2] and batches == [2]
    assert np.array_equal(out["y"], np.full((2, 3), 2.0))


def test_requests_arriving_during_a_lone_run_are_batched_behind_it():
    calls: list[int] = []
    release = threading.Event()

    def slow(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        if len(calls) == 1:
            release.wait(5)
        return {"y": batch + 1}

    async def scenario():
        in_flight = [1]
        batcher = MicroBatcher(slow, 64, 200, pending=lambda: in_flight[0])
        first = asyncio.create_task(batcher.submit(np.zeros((1, 2), np.float32)))
        await asyncio.sleep(0.05)  # the lone call is running
        in_flight[0] = 4
        rest = [asyncio.create_task(batcher.submit(np.full((1, 2), i, np.float32))) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        release.set()
        outs = await asyncio.gather(first, *rest)
        await batcher.close()
        return outs

    outs = asyncio.run(scenario())
    assert calls[0] == 1 and sum(calls) == 4 and len(calls) <= 3  # the three late rows share calls
    assert [float(o["y"][0, 0]) for o in outs] == [1.0, 2.0, 3.0, 4.0]


def test_work_with_no_rows_is_finished_without_a_model_call():
    """A photo without faces handed to the worker thread: alone, its ``finish`` gets no outputs and no batch is
    observed; batched with a row-bearing job, both are finished from the one call over the other's rows."""
    calls: list[int] = []
    batches: list[int] = []

    def double(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        return {"y": batch * 2}

    def no_rows() -> np.ndarray:
        return np.zeros((0, 3), np.float32)

    async def scenario():
        in_flight = [1]
        batcher = MicroBatcher(double, 64, 500, on_batch=lambda n, _: batches.append(n), pending=lambda: in_flight[0])
        empty = await batcher.submit_work(no_rows, lambda out: sorted(out), 1)
        alone = (calls[:], batches[:])
        in_flight[0] = 2
        both = await asyncio.gather(
            batcher.submit_work(no_rows, lambda out: out["y"].shape, 1),
            batcher.submit_work(lambda: np.ones((2, 3), np.float32), lambda out: float(out["y"].sum()), 2),
        )
        await batcher.close()
        return empty, alone, both

    empty, alone, both = asyncio.run(scenario())
    assert empty == [] and alone == ([], [])
    assert both == [(0, 3), 12.0] and calls == [2] and batches == [2]
