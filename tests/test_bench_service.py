"""benchmarks.bench_service's server CPU figures: read from /proc for a live process, and what they mean per request
(no speed asserted: speed figures belong to the script)."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks import process_cpu_s
from benchmarks.bench_service import server_cpu


def test_a_process_cpu_reading_grows_while_it_works():
    before = process_cpu_s(os.getpid())
    if before is None:
        pytest.skip("no /proc here")
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert process_cpu_s(os.getpid()) >= before + 0.1  # clock ticks are 10 ms: generous


def test_server_cpu_is_per_request_and_in_cores_busy():
    r = {"requests": 400, "rps": 100.0}  # 4 s of load
    assert server_cpu(10.0, 16.0, r) == pytest.approx({"server_cpu_ms_per_request": 15.0, "server_cores_busy": 1.5})
    assert server_cpu(None, 16.0, r) == {} and server_cpu(1.0, 2.0, {"requests": 0, "rps": 0.0}) == {}
    assert process_cpu_s(2**22 + 12345) is None  # no such process
