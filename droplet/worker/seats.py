"""Seats at the shared work queue: on a host with more workers than cores, only as many of them
consume the shared queue at a time as the host has run slots (one per core by default).

RabbitMQ hands the deliveries of a burst round robin to every consumer with room. Thirty-two
workers on two cores then each take a turn, and every delivery lands on a process that has
not run for a while (a wake-up, a context switch, cold caches): measured on two cores, such a
fleet spent 1.8x the CPU per call of a two-worker one, and gave 65% of its burst. With seats,
the same few processes take the whole burst while the others sleep (about 1.1x the CPU per
call). The other workers still serve their own queues (pinned DAG steps, pins) at once.

A seat is a byte-range lock (fcntl.lockf) on a file per user and shared queue in the
temporary directory; the kernel drops a dead worker's lock, so no seat is ever lost. A worker
consumes the shared queue only while it holds a seat, and gives the seat back whenever it
stops consuming: a run that goes on past the keeper's 20 ms mark (it sleeps, waits on I/O or
computes long), a function known to be slow, a step of its own queue that may take long, a
long call. A worker that wants a seat and finds none waits for one on background threads,
one per seat (the kernel lets a thread wait for one lock at a time), blocked in the kernel at
no cost; the one granted wakes the main loop, which consumes again.

A seated worker stamps its seat from its main loop at least every half second. A seat whose
stamp has not moved for `stale_s` (a stopped process, a wedged one) gets a substitute: a
waiting worker consumes in its stead until the stamp moves again. While it waits, a worker
holds a shared lock on one byte, so that a worker whose run goes on long knows whether
another will take the calls it hands back (handback.py).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable

from droplet.worker import lockfile

log = logging.getLogger(__name__)

STALE_S = 2.0
_STAMP_EVERY_NS = 100_000_000
_WAITING = 1024  # the byte waiters hold a shared lock on
_SUBSTITUTES = 2048  # where the substitutes' locks start
_STAMPS = 4096  # where the seats' stamps start (8 bytes each)
# Threads per waiting worker, one a seat (blocked in the kernel, they cost no CPU). On a
# host of more cores, each worker waits for the seats from its own starting point on, so
# that all are waited for; others are found by take().
_MAX_WAITERS = 64
_RETRY_S = 0.05


def seat_file_name(queue_identity: str) -> str:
    """One file per user and shared queue: workers of two namespaces or brokers on one host
    never take each other's seats (each queue must keep its own consumers)."""
    digest = hashlib.sha256(queue_identity.encode()).hexdigest()[:16]
    return f"droplet-seats-{os.getuid()}-{digest}"


class Seats:
    def __init__(self, count: int, queue_identity: str = "", directory: str | None = None,
                 stale_s: float = STALE_S, on_seated: Callable[[], None] = lambda: None) -> None:
        self.count = count
        self.on_seated = on_seated  # from a waiter thread, once a seat is held
        self._stale_ns = int(stale_s * 1e9)
        # Held around every change of what this worker holds, the kernel's locks with it: a
        # seat given back on the keeper thread, or let go by a waiter thread, must not be
        # dropped in the kernel after the main thread took it again (the process's locks are
        # one, whichever thread took them).
        self._mutex = threading.RLock()
        self._seat: int | None = None
        self._substitute: int | None = None  # the stale seat this worker stands in for
        self._waiting = False  # holds the shared lock on _WAITING
        self._wanted = threading.Event()  # set while unseated and waiting
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._stamped_ns = 0
        self._fd = -1
        if count > 0:
            self._fd = lockfile.open_own(directory or tempfile.gettempdir(),
                                         seat_file_name(queue_identity),
                                         "seats are off, every worker consumes")

    @property
    def enabled(self) -> bool:
        return self._fd >= 0

    @property
    def seated(self) -> bool:
        """Whether this worker may consume the shared queue now (a seat, or a substitute)."""
        return self._seat is not None or self._substitute is not None

    def take(self) -> bool:
        """Without waiting: a free seat, else a substitute's place for a stale one. True once
        seated (also when seated already)."""
        if self._fd < 0 or self.seated:
            return self.seated
        start = os.getpid() % self.count
        for step in range(self.count):
            index = (start + step) % self.count
            with self._mutex:
                if self.seated:  # a waiter thread was granted a seat meanwhile
                    return True
                if self._lock(index):
                    self._hold(index)
                    return self.seated
        stamps, now = self._stamps(), time.monotonic_ns()
        for index, stamp in enumerate(stamps):
            if not self._stale(stamp, now):
                continue
            with self._mutex:
                if self.seated:
                    return True
                if not self._lock(_SUBSTITUTES + index):
                    continue
                self._substitute = index
                self._wanted.clear()
                self._stop_waiting()
                log.warning("seat %d of the shared queue looks stuck (no stamp for %.1fs): "
                            "this worker consumes in its stead", index, (now - stamp) / 1e9)
                return True
        return False

    def keep(self) -> bool:
        """From the main loop while it consumes: stamps the seat (cheaply, at most every
        0.1 s). False when this worker must stop consuming: it stood in for a seat whose
        holder is moving again (the substitute's place is given back)."""
        now = time.monotonic_ns()
        seat, substitute = self._seat, self._substitute
        if seat is not None:
            if now - self._stamped_ns > _STAMP_EVERY_NS:
                self._stamp(seat, now)
            return True
        if substitute is None:
            return False
        stamps = self._stamps()
        if substitute < len(stamps) and not self._stale(stamps[substitute], now):
            log.info("seat %d of the shared queue moves again: its substitute steps down",
                     substitute)
            self.give_back()
            return False
        return True

    def wait(self) -> None:
        """Unseated and wanting a seat: the waiter threads wait for one (on_seated is called
        once held)."""
        if self._fd < 0 or self.seated or self._closed:
            return
        with self._mutex:
            if self.seated:
                return
            if not self._waiting:
                self._waiting = self._lock(_WAITING, shared=True)
            self._wanted.set()
        if not self._threads:
            start = os.getpid() % self.count
            for step in range(min(self.count, _MAX_WAITERS)):
                index = (start + step) % self.count
                thread = threading.Thread(target=self._wait_for, args=(index,), daemon=True,
                                          name=f"droplet-seat-{index}")
                thread.start()
                self._threads.append(thread)

    def others_waiting(self) -> bool:
        """Whether another worker on this host waits for a seat (and so takes one given back
        at once)."""
        if self._fd < 0:
            return False
        if self._waiting:
            return True  # (our own shared lock would hide the others')
        if not self._lock(_WAITING):
            return True
        self._unlock(_WAITING)
        return False

    def give_back(self) -> None:
        """Ends the seat or the substitute's place (idempotent; main or keeper thread)."""
        with self._mutex:
            seat, substitute = self._seat, self._substitute
            self._seat = self._substitute = None
            self._wanted.clear()
            if seat is not None:
                self._unlock(seat)
            if substitute is not None:
                self._unlock(_SUBSTITUTES + substitute)

    def close(self) -> None:
        """Gives back what is held. Waiter threads blocked in the kernel end when next
        granted (the process is ending: it drops any lock they take), so the file stays open
        once they exist (closing it under them could hand its number to another file)."""
        self._closed = True
        self.give_back()
        with self._mutex:
            self._stop_waiting()
        self._wanted.set()
        if not self._threads and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- internals ------------------------------------------------------------------------

    def _wait_for(self, index: int) -> None:
        while True:
            self._wanted.wait()
            if self._closed:
                return
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, index)
            except OSError as exc:  # EDEADLK: another waiter of ours holds what they wait for
                if self._closed:
                    return
                if exc.errno not in (errno.EDEADLK, errno.EINTR, errno.ENOLCK):
                    log.warning("waiting for seat %d failed: %s", index, exc)
                time.sleep(_RETRY_S)
                continue
            if self._closed:
                return
            if self._hold(index):
                self.on_seated()
            else:
                time.sleep(0)  # (the seat went back to the kernel's other waiters)

    def _hold(self, index: int) -> bool:
        """Keeps a seat just locked, unless this worker holds one already or stopped wanting
        it (then it goes back). A held substitute's place is given up for it."""
        with self._mutex:
            if self._seat == index:  # locked twice by this process: one lock, ours
                return True
            keep = self._seat is None and not self._closed and (
                self._wanted.is_set() or threading.current_thread() is threading.main_thread())
            if not keep:
                self._unlock(index)
                return False
            substitute = self._substitute
            self._seat, self._substitute = index, None
            self._wanted.clear()
            if substitute is not None:
                self._unlock(_SUBSTITUTES + substitute)
            self._stamp(index, time.monotonic_ns())
            self._stop_waiting()
        return True

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self._unlock(_WAITING)

    def _stamp(self, index: int, now_ns: int) -> None:
        self._stamped_ns = now_ns
        try:
            os.pwrite(self._fd, now_ns.to_bytes(8, "little"), _STAMPS + 8 * index)
        except OSError as exc:  # a full disk: waiters may take the seat for stuck
            log.debug("could not stamp seat %d: %s", index, exc)

    def _stale(self, stamp: int, now_ns: int) -> bool:
        """A stamp not moved for stale_s, or one far ahead of now (garbage: another boot's
        clock, a planted value), which proves nothing either."""
        return abs(now_ns - stamp) > self._stale_ns

    def _stamps(self) -> list[int]:
        try:
            raw = os.pread(self._fd, 8 * self.count, _STAMPS)
        except OSError:
            return []
        raw = raw.ljust(8 * self.count, b"\0")  # never stamped: 0, long stale
        return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]

    def _lock(self, offset: int, shared: bool = False) -> bool:
        return lockfile.try_lock(self._fd, offset, shared)

    def _unlock(self, offset: int) -> None:
        lockfile.unlock(self._fd, offset)
