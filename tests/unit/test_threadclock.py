"""threadclock: the wall clock less the time a thread waited for a core, measured by the
kernel. Proven with a real rival for the core (two threads pinned to one CPU) and a real
sleep, so the measure is the kernel's and not a model of it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from droplet import threadclock

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/thread-self/schedstat") or not hasattr(os, "sched_setaffinity"),
    reason="the kernel's per-thread scheduler statistics are Linux's")


def _spin(stop: threading.Event) -> None:
    os.sched_setaffinity(0, {0})  # this thread only
    while not stop.is_set():
        sum(range(1000))


def _on_cpu0(work: Callable[[], None]) -> tuple[float, float]:
    """(wall, own wall) of `work`, run on CPU 0 by a thread of its own."""
    measured: list[float] = []

    def run() -> None:
        os.sched_setaffinity(0, {0})
        since = threadclock.mark()
        work()
        measured.extend([time.monotonic() - since.wall_s, threadclock.own_wall_s(since)])

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return measured[0], measured[1]


def _compute(cpu_s: float) -> Callable[[], None]:
    def work() -> None:
        until = time.thread_time() + cpu_s
        while time.thread_time() < until:
            sum(range(200))
    return work


def test_time_spent_waiting_for_a_core_is_not_the_works_own() -> None:
    """A rival spinning on the same core: the work's wall time grows, its own time does not.
    (Python threads share one interpreter lock: the rival is a separate process.)"""
    import multiprocessing

    stop = multiprocessing.get_context("fork").Event()
    rival = multiprocessing.get_context("fork").Process(target=_spin, args=(stop,))
    rival.start()
    try:
        time.sleep(0.05)
        wall, own = _on_cpu0(_compute(0.15))
    finally:
        stop.set()
        rival.join(10)
    assert wall > 0.2, f"the rival took the core part of the time ({wall:.3f} s)"
    assert own < wall - 0.05, f"queued time left out: wall {wall:.3f} s, own {own:.3f} s"


def test_sleeping_and_waiting_on_io_are_the_works_own() -> None:
    wall, own = _on_cpu0(lambda: time.sleep(0.1))
    assert wall >= 0.1
    assert own > 0.09, f"a sleep is the work's time: wall {wall:.3f} s, own {own:.3f} s"


def test_where_the_kernel_does_not_say_the_wall_clock_is_all_there_is() -> None:
    since = threadclock.Mark(time.thread_time(), time.monotonic() - 1.0, -1.0)
    assert threadclock.own_wall_s(since) >= 1.0
