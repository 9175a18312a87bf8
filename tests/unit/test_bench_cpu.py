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
    # The child spins for a second of its own CPU time, not of the wall clock: on a crowded
    # CI host a wall-clock spin can get under idle_pct of a core in a window and read as
    # rest. It says "spinning" once its loop runs, so its interpreter's start is not timed.
    busy = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nprint('spinning', flush=True)\n"
         "while time.process_time() < 1.0: pass\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout is not None and busy.stdout.readline().strip() == "spinning"
        waited = settle([busy.pid], idle_pct=5.0, timeout_s=30.0, window_s=0.2)
        rested = busy.poll() is None and _cpu_s(busy.pid) >= 0.95
        assert rested, "settle returned while the child was still spinning"
        assert 0.5 < waited < 29.0, f"settled after {waited:.2f}s"
        assert settle([busy.pid], idle_pct=5.0, timeout_s=30.0, window_s=0.2) < 2.0
    finally:
        busy.kill()
        busy.communicate()


def _cpu_s(pid: int) -> float:
    seconds = cpu_seconds([pid])
    assert seconds is not None
    return seconds
