"""Telling a stretch of work that was long from one that was only kept off a core.

On a host with more busy processes than cores (32 workers on 2 cores), the kernel deschedules a
worker for milliseconds at a time. Measured by the wall clock, a quick call then looks slow,
and the outcomes of a delivery look as if they waited long for each other: the worker would
commit them in pieces and learn that quick functions are slow, spending more per call exactly
where the host has least to spare. Linux counts, per thread, the time it spent runnable but
waiting for a core (/proc/thread-self/schedstat); the wall clock less that time is what the
work itself took, sleeps and I/O waits included. Elsewhere the wall clock is all there is.
"""

from __future__ import annotations

import os
import threading
import time
from typing import NamedTuple

_SCHEDSTAT = "/proc/thread-self/schedstat"


class Mark(NamedTuple):
    cpu_s: float
    wall_s: float
    queued_s: float  # waited for a core so far (this thread); -1.0 where unknown


class _Schedstat:
    """This thread's schedstat, kept open (re-read in place: one system call a look)."""

    def __init__(self) -> None:
        try:
            self.fd = os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1

    def __del__(self) -> None:  # the thread ended: its thread-local storage goes
        if self.fd >= 0:
            os.close(self.fd)

    def queued_s(self) -> float:
        if self.fd < 0:
            return -1.0
        try:
            return int(os.pread(self.fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return -1.0


_local = threading.local()


def _forget() -> None:
    """In a forked child: the schedstat kept open is the parent's thread's (a file of
    /proc/<parent>/task/<tid>), and its wait would count as this process's."""
    global _local
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def queued_s() -> float:
    """How long this thread has waited for a core so far (-1.0 where the kernel does not say)."""
    stat = getattr(_local, "schedstat", None)
    if stat is None:
        stat = _local.schedstat = _Schedstat()
    return stat.queued_s()


def mark() -> Mark:
    """Where this thread stands now."""
    return Mark(time.thread_time(), time.monotonic(), queued_s())


def own_wall_s(since: Mark) -> float:
    """Wall-clock time since `since`, less the time this thread waited for a core meanwhile."""
    wall_s = time.monotonic() - since.wall_s
    if since.queued_s < 0:
        return wall_s
    now = queued_s()
    return wall_s if now < 0 else max(0.0, wall_s - (now - since.queued_s))
