"""threadclock.py keeps each thread's /proc/thread-self/schedstat open; that file names the
thread that opened it (/proc/<pid>/task/<tid>). A process forked after its parent looked
(a function's multiprocessing child, a forking test runner) must read its own thread's wait
for a core, not the parent's."""

from __future__ import annotations

import os

import pytest

from droplet import threadclock

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"),
                                reason="Linux schedstat")


def _own_queued_s() -> float:
    with open("/proc/thread-self/schedstat") as stat:
        return int(stat.read().split()[1]) / 1e9


def test_a_forked_child_reads_its_own_wait_for_a_core() -> None:
    threadclock.queued_s()  # the parent's thread has its file open
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own wait only grows, and started at zero at the fork
        try:
            seen = threadclock.queued_s()
            own = _own_queued_s()  # read after: at least as much, if both are its own
            os.write(write, f"{seen} {own}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 100).decode().split()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    seen, own = (float(x) for x in answer)
    assert seen <= own, f"the child read {seen} s of waiting; its own thread waited {own} s"
