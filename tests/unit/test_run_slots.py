"""worker/slots.py: run slots shared by the workers of one host, as real byte-range locks
between real processes (a process's own locks never conflict with each other)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from droplet.worker.slots import RunSlots

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX record locks, Linux")

_HOLDER = """
import sys, time
from droplet.worker.slots import RunSlots
if sys.argv[5] == "moving":  # the slots change hands all the time (as on a busy host)
    RunSlots._stamps = lambda self: str(time.monotonic()).encode()
slots = RunSlots(int(sys.argv[2]), sys.argv[1], wait_s=float(sys.argv[3]),
                 stuck_s=float(sys.argv[6]))
started = time.monotonic()
took = slots.take()
waited_s = time.monotonic() - started
print("held" if took else "skipping" if slots._skip_until else "none", flush=True)
print(f"{waited_s:.3f}", flush=True)
time.sleep(float(sys.argv[4]))
slots.give_back()
print("given back", flush=True)
time.sleep(600)
"""


def _holder(directory: Path, count: int = 1, hold_s: float = 600.0, wait_s: float = 0.2,
            moving: bool = False, stuck_s: float | None = None,
            ) -> tuple[subprocess.Popen[str], str]:
    """Another worker: a process that takes a slot (on its main thread), holds it hold_s;
    what it said: held, none (ran without one), skipping (and stopped waiting for a while)."""
    proc, said, _ = _timed_holder(directory, count, hold_s, wait_s, moving, stuck_s)
    return proc, said


def _timed_holder(directory: Path, count: int = 1, hold_s: float = 600.0, wait_s: float = 0.2,
                  moving: bool = False, stuck_s: float | None = None,
                  ) -> tuple[subprocess.Popen[str], str, float]:
    """_holder's worker, and how long its take() waited: timed in that process, so that its
    start (seconds on a crowded host) is not counted."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory), str(count),
                             str(wait_s), str(hold_s), "moving" if moving else "still",
                             str(wait_s if stuck_s is None else stuck_s)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said = proc.stdout.readline().strip()
    return proc, said, float(proc.stdout.readline().strip() or "nan")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_slot_held_by_another_worker_is_taken_once_given_back(tmp_path: Path) -> None:
    holder, said = _holder(tmp_path, hold_s=0.5)
    slots = RunSlots(1, str(tmp_path))
    try:
        assert said == "held"
        assert not slots.take(), "held elsewhere (and this test's timer forbids waiting)"
        assert holder.stdout is not None and holder.stdout.readline().strip() == "given back"
        assert slots.take()
        slots.give_back()
        assert slots.take(), "given back, taken again"
    finally:
        slots.close()
        _stop(holder)


def test_a_worker_that_dies_holding_a_slot_loses_it(tmp_path: Path) -> None:
    holder, said = _holder(tmp_path)
    slots = RunSlots(1, str(tmp_path))
    try:
        assert said == "held" and not slots.take()
        holder.kill()
        holder.wait(10)
        assert slots.take(), "the kernel dropped the dead process's lock"
    finally:
        slots.close()
        _stop(holder)


def test_as_many_holders_as_slots_and_no_more(tmp_path: Path) -> None:
    holders = [_holder(tmp_path, count=2, wait_s=0.0) for _ in range(3)]
    try:
        assert sorted(said for _, said in holders) == ["held", "held", "none"]
    finally:
        for proc, _ in holders:
            _stop(proc)


def test_a_waiting_worker_gets_the_slot_when_it_is_given_back(tmp_path: Path) -> None:
    """On its main thread, with no timer armed, a worker waits (off the run queue) for the
    holder to give the slot back."""
    first, said = _holder(tmp_path, hold_s=2.0)
    try:
        assert said == "held"
        second, said, waited = _timed_holder(tmp_path, wait_s=8.0)
        try:
            assert said == "held", "granted when the first gave it back"
            # The first gives it back at most 2 s after it said so; the timer is 8 s.
            assert waited < 5.0, f"waited {waited:.1f} s, not for the timer"
        finally:
            _stop(second)
    finally:
        _stop(first)


def test_a_stuck_holder_holds_up_a_waiting_worker_only_for_wait_s(tmp_path: Path) -> None:
    first, said = _holder(tmp_path)
    try:
        assert said == "held"
        os.kill(first.pid, signal.SIGSTOP)  # stopped holding it
        second, said, waited = _timed_holder(tmp_path, wait_s=0.3)
        _stop(second)
        assert said == "skipping", "ran without a slot, and stops waiting for a while"
        assert waited < 3.0, f"waited {waited:.1f} s"
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _stop(first)


def test_a_slot_file_planted_by_someone_else_turns_slots_off(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / f"droplet-run-slots-{os.getuid()}").symlink_to(target)
    slots = RunSlots(1, str(tmp_path))
    try:
        assert not slots.enabled and not slots.take()
    finally:
        slots.close()


def test_zero_slots_is_no_limit(tmp_path: Path) -> None:
    slots = RunSlots(0, str(tmp_path))
    assert not slots.enabled and not slots.take()
    assert list(tmp_path.iterdir()) == [], "no file made"
    slots.close()


def test_a_busy_host_keeps_its_waiters_waiting_and_a_stuck_one_does_not(tmp_path: Path) -> None:
    """Slots that keep changing hands are a busy host, not stuck holders: a worker that got
    none within wait_s runs this delivery without one but goes on waiting next time; slots
    that do not move within stuck_s make it stop waiting for skip_s."""
    first, said = _holder(tmp_path)
    try:
        assert said == "held"
        busy, said_busy = _holder(tmp_path, wait_s=0.6, stuck_s=0.2, moving=True)
        _stop(busy)
        still, said_still = _holder(tmp_path, wait_s=0.6, stuck_s=0.2)
        _stop(still)
        assert (said_busy, said_still) == ("none", "skipping")
    finally:
        _stop(first)


def test_a_slot_taken_is_stamped_so_waiters_see_it_change_hands(tmp_path: Path) -> None:
    first, said = _holder(tmp_path, hold_s=0.0)
    watcher = RunSlots(1, str(tmp_path))
    try:
        assert said == "held"
        before = watcher._stamps()
        second, said = _holder(tmp_path, hold_s=0.0)
        _stop(second)
        assert said == "held" and watcher._stamps() != before
    finally:
        watcher.close()
        _stop(first)
