"""Run slots: on a host with more workers than cores, as many quick deliveries run at once as
the host has cores, and the other workers wait off the kernel's run queue.

Thirty-two workers sharing two cores each hold a delivery of a burst; all runnable at once,
the kernel deschedules them mid-delivery every few milliseconds, and each resumes with cold
caches: measured, such a fleet spent 1.4-2x the CPU per call of a two-worker one. Workers of one
user on one host therefore share `run_slots` slots (one per core by default): byte-range
locks on one file in the temporary directory. A worker takes a slot before it handles a
delivery of calls known to be quick (worker/pace.py) and gives it back when the delivery is
done, or as soon as a run goes on long (the keeper's 20 ms mark): a delivery that may take
long, sleeps or waits on I/O never holds a slot, so I/O-bound functions still run side by side
on every worker. The kernel drops the locks of a process that dies, so no slot is ever lost.

Each taker stamps its slot (a few bytes past the locks), so a waiter sees the slots change
hands. A host busy with a burst hands them on every few milliseconds: a worker waits as long
as that goes on, up to `wait_s` (the kernel does not queue waiters fairly), then runs this
delivery without one. Slots that change hands for none of `stuck_s` mean stuck holders (a
stopped process, a commit waiting for etcd): the worker runs without one, and for `skip_s`
does not wait again. Only the
main thread waits, and only while no interval timer is armed: the wait is bounded by SIGALRM,
which is free then in a worker (no function runs); elsewhere (workers run in threads by
tests, a test runner's own timer) a slot is only taken when one is free at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import tempfile
import threading
import time
from types import FrameType

from droplet.worker import lockfile

log = logging.getLogger(__name__)

WAIT_S = 1.0
STUCK_S = 0.25
SKIP_S = 10.0
_STAMPS = 4096  # where the slots' stamps start in the file (past the locked bytes)


class _Expired(Exception):
    pass


class RunSlots:
    def __init__(self, count: int, directory: str | None = None, wait_s: float = WAIT_S,
                 skip_s: float = SKIP_S, stuck_s: float = STUCK_S) -> None:
        self.count = count
        self._wait_s = wait_s
        self._stuck_s = min(stuck_s, wait_s)
        self._skip_s = skip_s
        self._skip_until = 0.0
        self._held: int | None = None
        self._lock = threading.Lock()  # the keeper thread gives a slot back too
        self._armed = False
        self._fd = lockfile.open_own(directory or tempfile.gettempdir(),
                                     f"droplet-run-slots-{os.getuid()}",
                                     "run slots are off") if count > 0 else -1

    @property
    def enabled(self) -> bool:
        return self._fd >= 0

    @property
    def held(self) -> bool:
        """Whether this worker holds a slot now."""
        return self._held is not None

    def close(self) -> None:
        self.give_back()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def take(self) -> bool:
        """A slot for the delivery about to run: True once held, False when running without
        one (none free within wait_s, or waiting is off for now)."""
        if self._fd < 0 or self._held is not None:
            return self._held is not None
        start = os.getpid() % self.count  # workers spread over the slots they try first
        index = self._try_each(start)
        if index is None and not (
                self._wait_s <= 0 or time.monotonic() < self._skip_until
                or threading.current_thread() is not threading.main_thread()
                or signal.getitimer(signal.ITIMER_REAL)[0] > 0):  # another's timer runs
            index, stuck = self._wait(start)
            if stuck:
                log.info("no run slot changed hands in %gs: running without one for %gs",
                         self._stuck_s, self._skip_s)
                self._skip_until = time.monotonic() + self._skip_s
        if index is None:
            return False
        self._held = index
        try:
            os.pwrite(self._fd, time.monotonic_ns().to_bytes(8, "little"), _STAMPS + 8 * index)
        except OSError as exc:  # a full disk: waiters may take the slots for stuck
            log.debug("could not stamp run slot %d: %s", index, exc)
        return True

    def _stamps(self) -> bytes:
        try:
            return os.pread(self._fd, 8 * self.count, _STAMPS)
        except OSError:
            return b""

    def _try_each(self, start: int) -> int | None:
        """The first slot free now, from start on (without waiting)."""
        for step in range(self.count):
            index = (start + step) % self.count
            if lockfile.try_lock(self._fd, index):
                return index
        return None

    def _wait(self, first: int) -> tuple[int | None, bool]:
        """Waits (off the run queue) for a slot: blocked on one slot, looking at every slot
        again at each tick of the timer and then blocking on the next one, so that whichever
        slot is given back first is taken (a lock can only be waited for one at a time, and
        the holder of the first one tried may be stuck). The slot, or None and whether the
        holders looked stuck."""
        def expire(_signum: int, _frame: FrameType | None) -> None:
            if self._armed:  # only the blocking wait is cut short; a late signal is ignored
                raise _Expired

        tick_s = self._stuck_s  # (a waiter woken more often cost the host more than it won)
        deadline = time.monotonic() + self._wait_s
        seen, moved = self._stamps(), time.monotonic()
        index = first
        previous = signal.signal(signal.SIGALRM, expire)
        try:
            signal.setitimer(signal.ITIMER_REAL, tick_s, tick_s)
            while True:
                try:
                    self._armed = True
                    fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, index)
                    self._armed = False
                    return index, False
                except _Expired:
                    self._armed = False
                    self._unlock(index)  # it may have been granted as the timer went off
                except OSError as exc:  # EDEADLK and the like: run without a slot
                    self._armed = False
                    log.debug("waiting for a run slot failed: %s", exc)
                    return None, False
                free = self._try_each(index + 1)
                if free is not None:
                    return free, False
                now, stamps = time.monotonic(), self._stamps()
                if stamps != seen:
                    seen, moved = stamps, now
                elif now - moved > self._stuck_s - tick_s / 2:
                    return None, True
                if now > deadline - tick_s / 2:
                    return None, False
                index = (index + 1) % self.count
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def give_back(self) -> None:
        """Ends the hold (idempotent; the main thread after a delivery, the keeper thread when
        a run goes on long)."""
        with self._lock:
            index, self._held = self._held, None
        if index is not None:
            self._unlock(index)

    def _unlock(self, index: int) -> None:
        lockfile.unlock(self._fd, index)
