"""The micro-batcher: grouping across callers, splitting results back in order, errors, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import BatcherClosed, MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_concurrent_submits_share_one_call_and_get_their_own_rows():
    calls: list[int] = []

    def double(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        return {"y": batch * 2}

    async def scenario():
        batcher = MicroBatcher(double, max_batch=64, max_wait_ms=50)
        inputs = [np.full((i + 1, 3), i, np.float32) for i in range(5)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return inputs, outputs

    inputs, outputs = run(scenario())
    assert calls == [15]
    for x, out in zip(inputs, outputs, strict=True):
        assert np.array_equal(out["y"], x * 2)


def test_rows_sent_as_is_reach_the_model_with_a_mask_of_the_others():
    """A client's own tensors (``as_is``) share the batch; the model is told which rows may get a second pass."""
    calls: list[tuple] = []

    def record(batch: np.ndarray, *mask) -> dict[str, np.ndarray]:
        calls.append((len(batch), *(m.tolist() for m in mask)))
        return {"y": batch}

    async def scenario(as_is: tuple[bool, ...]):
        batcher = MicroBatcher(record, max_batch=64, max_wait_ms=50)
        sizes = (2, 1, 3)
        await asyncio.gather(*(batcher.submit(np.zeros((n, 1)), raw) for n, raw in zip(sizes, as_is, strict=True)))
        await batcher.close()

    run(scenario((False, True, False)))
    run(scenario((False, False, False)))
    assert calls == [(6, [True, True, False, True, True, True]), (6,)]  # none as_is: fn gets the rows alone


def test_max_batch_splits_large_queues():
    calls: list[int] = []

    async def scenario():
        batcher = MicroBatcher(lambda b: calls.append(len(b)) or {"y": b}, max_batch=4, max_wait_ms=20)
        await asyncio.gather(*(batcher.submit(np.zeros((2, 1))) for _ in range(6)))
        await batcher.close()

    run(scenario())
    assert sum(calls) == 12 and max(calls) <= 4


def test_model_error_reaches_every_waiting_caller():
    def broken(batch):
        raise ValueError("bad batch")

    async def scenario():
        batcher = MicroBatcher(broken, max_batch=8, max_wait_ms=20)
        results = await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(3)), return_exceptions=True)
        await batcher.close()
        return results

    assert all(isinstance(r, ValueError) for r in run(scenario()))


def test_closed_batcher_refuses_new_work():
    async def scenario():
        batcher = MicroBatcher(lambda b: {"y": b}, max_batch=8, max_wait_ms=1)
        await batcher.submit(np.zeros((1, 1)))
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(np.zeros((1, 1)))

    run(scenario())


def test_closing_while_a_batch_is_being_collected_answers_its_rows():
    """Rows already taken off the queue into a batch that waits for more (``max_wait``) are answered with
    ``BatcherClosed`` when the model is unloaded then, not left waiting for ever."""

    async def scenario():
        batcher = MicroBatcher(lambda b: {"y": b}, max_batch=8, max_wait_ms=5000)
        batcher.start()
        await asyncio.sleep(0.01)  # the collecting loop waits for a first row (no backlog: it will wait for more)
        waiting = asyncio.create_task(batcher.submit(np.zeros((1, 1))))
        await asyncio.sleep(0.05)  # taken off the queue; the batch waits for more rows
        assert not waiting.done()
        await asyncio.wait_for(batcher.close(), 2)
        with pytest.raises(BatcherClosed):
            await asyncio.wait_for(waiting, 2)

    run(scenario())


def test_two_workers_run_batches_at_once_and_queue_behind_busy_ones():
    running, peak, calls = 0, 0, []
    lock = threading.Lock()

    def slow(batch: np.ndarray) -> dict[str, np.ndarray]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.2)
        with lock:
            running -= 1
            calls.append(len(batch))
        return {"y": batch + 1}

    async def scenario():
        batcher = MicroBatcher(slow, max_batch=64, max_wait_ms=0, workers=2)
        first = []
        for _ in range(2):  # one call each, side by side
            first.append(asyncio.create_task(batcher.submit(np.zeros((1, 1)))))
            await asyncio.sleep(0.02)
        # both workers busy: the next five queue and go as one batch
        rest = [asyncio.create_task(batcher.submit(np.full((1, 1), i))) for i in range(5)]
        outputs = await asyncio.gather(*first, *rest)
        await batcher.close()
        return outputs

    outputs = run(scenario())
    assert peak == 2 and sorted(calls) == [1, 1, 5]
    assert [float(o["y"][0, 0]) for o in outputs[2:]] == [1, 2, 3, 4, 5]
