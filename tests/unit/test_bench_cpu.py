"""The CPU figures of `droplet bench --sweep` come from /proc and follow real work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from droplet.cli.bench_cpu import cpu_seconds, measure_fleet_cpu, settle

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _spin(n: int) -> float:
    """Burns CPU; returns a made-up rate for the burst it stands for."""
    total = 0
    for i in range(n):
        total += i * i
    return 5.0 if total > 0 else 0.0


def test_cpu_seconds_grows_with_work_and_is_none_for_a_missing_process() -> None:
    before = cpu_seconds([os.getpid()])
    _spin(3_000_000)
    after = cpu_seconds([os.getpid()])
    assert before is not None and after is not None
    assert after > before
    assert cpu_seconds([2**22 + 7]) is None  # above pid_max: no such process


def test_fleet_cpu_charges_the_run_per_call_and_the_rest_to_idle() -> None:
    rate, cpu = measure_fleet_cpu([os.getpid()], [], calls=1000,
                                  run=lambda: _spin(3_000_000), idle_s=0.5)
    assert rate == 5.0
    assert cpu is not None
    assert cpu.worker_cpu_us_per_call > 0  # the spin is charged to the 1000 "calls"
    assert cpu.scheduler_cpu_us_per_call == 0
    assert cpu.idle_worker_cpu_pct < 50  # this process slept through the idle window


def test_settle_waits_while_a_process_is_busy_and_not_once_it_rests() -> None:
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nend = time.monotonic() + 1.2\n"
                             "while time.monotonic() < end: pass\ntime.sleep(30)"])
    try:
        waited = settle([busy.pid], idle_pct=20.0, timeout_s=10.0, window_s=0.2)
        assert 0.9 < waited < 5.0, f"settled after {waited:.2f}s"
        assert settle([busy.pid], idle_pct=20.0, timeout_s=10.0, window_s=0.2) < 0.5
    finally:
        busy.kill()
        busy.wait()
