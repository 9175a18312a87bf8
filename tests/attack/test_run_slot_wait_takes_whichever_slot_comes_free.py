"""worker/slots.py: a worker waiting for one of several run slots takes whichever comes free
first, not only the one it tried first (a holder stuck in a long commit or stopped must not
make it wait out its wait_s, and then stop waiting for skip_s, while another slot is free).
Real processes: byte-range locks of one process never conflict with each other."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_run_slots import _stop

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX record locks, Linux")

_LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
print("locked", flush=True)
time.sleep(600)
"""

_WAITER = """
import sys, time
from droplet.worker.slots import RunSlots
slots = RunSlots(2, sys.argv[1], wait_s=float(sys.argv[2]), stuck_s=2.0)
print("ready", flush=True)
start = time.monotonic()
took = slots.take()
print("held" if took else "none", round(time.monotonic() - start, 3), flush=True)
time.sleep(600)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True)


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_a_waiter_takes_the_other_slot_when_it_comes_free(tmp_path: Path) -> None:
    slot_file = str(tmp_path / f"droplet-run-slots-{os.getuid()}")
    lockers = [_spawn(_LOCKER, slot_file, str(index)) for index in (0, 1)]
    waiter = None
    try:
        assert [_line(locker) for locker in lockers] == ["locked", "locked"]
        waiter = _spawn(_WAITER, str(tmp_path), "6.0")
        assert _line(waiter) == "ready"
        time.sleep(1.0)  # it found both slots taken and waits
        other = 1 - waiter.pid % 2  # not the slot it tried first
        _stop(lockers[other])
        said, waited = _line(waiter).split()
        assert said == "held", "it ran without a slot although one came free"
        assert float(waited) < 5.0, f"waited {waited} s: not for the free slot"
    finally:
        for proc in [*lockers, *([waiter] if waiter else [])]:
            _stop(proc)
