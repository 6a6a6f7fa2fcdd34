"""benchmarks.stages' in-sequence timing: the stages run in a request's order, each repeat the whole chain."""

from __future__ import annotations

import time

from benchmarks.stages import stages_in_sequence


def test_stages_run_in_order_each_repeat_and_sum_to_the_total():
    calls: list[str] = []

    def step(name: str, seconds: float):
        def run() -> None:
            calls.append(name)
            time.sleep(seconds)

        return run

    out = stages_in_sequence({"decode": step("decode", 0.002), "detect": step("detect", 0.004)}, repeats=3)
    assert calls == ["decode", "detect"] * 3  # the chain, not each stage three times back to back
    assert set(out) == {"decode", "detect", "total"}
    assert 2 <= out["decode"] < out["detect"] and out["total"] >= out["decode"] + out["detect"] - 0.01
