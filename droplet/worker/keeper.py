"""Keeping the worker's broker connection alive while a function runs.

The main thread does everything for a call (receive, run, publish, ack) with no hand-off
between threads, which is what makes a short call cheap. But a broker connection must be
serviced (heartbeats) even while a function runs for minutes, so this keeper watches: once a
function has run longer than `grace_s`, it takes the connection and pumps it every
`interval_s` until the function returns. Deliveries that arrive meanwhile stay buffered in
the connection for the main thread.

Past `long_call_s` it calls `on_long_call(conn)` once, which hands the deliveries in hand over
to claims in etcd and acks them: the broker closes a channel that keeps a message unacked
longer than its consumer timeout (30 minutes by default), which would redeliver a call that is
still running.

It is also the last line of the time limit: a function that ignores SIGALRM (stuck in C
code) for `HARD_KILL_GRACE_S` past its deadline gets the whole worker process exited; the
supervisor (systemd, `droplet up`) starts a fresh one and the call is redelivered, until
the poison counter dead-letters it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from droplet.broker.interface import BrokerConnection
from droplet.errors import DropletError, StoreError

log = logging.getLogger(__name__)

HARD_KILL_GRACE_S = 10.0
# How long after a run started the keeper stays at its busy pace (flush_after_s): calls that
# follow each other closer than this never wake it (a wake-up a call was a context switch and
# a GIL hand-off each, on the hot path of every quick call that holds a run slot or a seat).
_STAY_BUSY_S = 0.05
_EARLY_S = 0.001


class ConnectionKeeper:
    def __init__(
        self,
        grace_s: float = 1.0,
        interval_s: float = 0.5,
        deadline: Callable[[], float | None] = lambda: None,
        hard_kill_grace_s: float = HARD_KILL_GRACE_S,
        long_call_s: float = 0.0,
        on_long_call: Callable[[BrokerConnection], None] | None = None,
        flush: Callable[[], None] | None = None,
        pending: Callable[[], bool] = lambda: True,
        flush_after_s: float = 0.02,
        on_busy: Callable[[], None] | None = None,
    ) -> None:
        self._grace_s = grace_s
        # While a function runs, what earlier quick calls of its delivery produced is
        # committed from here after flush_after_s: no result waits for a slow run.
        self._flush = flush
        self._pending = pending  # whether anything waits to be flushed (else: no hurry)
        self._flush_after_s = flush_after_s
        self._on_busy = on_busy  # once per run past grace_s: the status shows it busy
        self._busy_told = False
        self._last_pump = 0.0
        self._long_call_s = long_call_s
        self._on_long_call = on_long_call
        self._long_call_handled = False
        self._hard_kill_grace_s = hard_kill_grace_s
        self._deadline = deadline
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._conn: BrokerConnection | None = None
        self._busy_since: float | None = None
        self._last_start = -_STAY_BUSY_S  # when the latest run started (monotonic)
        self._busy_pace = False  # the keeper waits flush_after_s, not interval_s, now
        self._runner = self._runner_tid = 0  # the thread running the function (ident, the
        # kernel's id) and its CPU time at the start
        self._cpu_since = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="conn-keeper")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @contextmanager
    def attached(self, conn: BrokerConnection) -> Iterator[None]:
        """Makes conn the one to keep alive for the duration of a session."""
        with self._lock:
            self._conn = conn
        try:
            yield
        finally:
            with self._lock:
                self._conn = None

    @contextmanager
    def using(self) -> Iterator[None]:
        """Held by the main thread while it touches the connection."""
        with self._lock:
            yield

    def running(self) -> ConnectionKeeper:
        """Marks the stretch in which a function runs (`with keeper.running():`); the main
        thread touches the connection only through using() until it ends. On the way out it
        waits for a pump in progress, so that afterwards the main thread has the connection
        to itself. The keeper is its own context (entered around every call: no generator
        and no object per call); only the main thread enters it, one stretch at a time."""
        return self

    def __enter__(self) -> None:
        self._busy_since = self._last_start = time.monotonic()
        self._runner = threading.get_ident()
        self._runner_tid = threading.get_native_id()
        self._cpu_since = time.thread_time()
        self._long_call_handled = False
        self._busy_told = False
        if self._flush is not None and not self._busy_pace and self._pending():
            # From its idle pace to the busy one: outcomes wait on it. Not when it ticks at
            # the busy pace already: one wake-up of this thread per call of a burst's
            # envelope was a context switch each, on a crowded host among the costliest.
            self._wake.set()
            # Woken: it takes up the busy pace by itself. Said here too, or every run of a
            # burst before the keeper gets the interpreter (it may wait 5 ms for it) sets the
            # event again. Safe: _busy_since stays set until this run ends, so the keeper
            # cannot settle at its idle pace meanwhile.
            self._busy_pace = True

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._busy_since = None

    def busy_since(self) -> float | None:
        """When the function running now started (monotonic), or None."""
        return self._busy_since

    def _tick_s(self) -> float | None:
        """How long to wait: until the run's flush_after_s mark while a run is young, then
        at the busy pace, which it keeps for _STAY_BUSY_S after a run started (so that a
        run starting meanwhile needs no wake-up: the next tick comes before its mark); None
        at the idle pace (a starting run wakes it)."""
        now, since = time.monotonic(), self._busy_since
        if since is not None:
            to_mark = since + self._flush_after_s - now
            return max(0.001, to_mark) if to_mark > 0 else self._flush_after_s
        if now - self._last_start < _STAY_BUSY_S:
            return self._flush_after_s
        return None

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._busy_pace = False  # first: a run starting now wakes it (running())
            busy_tick = self._tick_s()
            self._busy_pace = busy_tick is not None
            tick = self._interval_s if busy_tick is None else busy_tick
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception:  # the keeper must outlive whatever a broken connection raises
                log.exception("the connection keeper's tick failed: it lets this connection "
                              "go (the main thread reconnects) and goes on")
                with self._lock:
                    self._conn = None

    def _tick(self) -> None:
        self._flush_pending()
        if time.monotonic() - self._last_pump < self._interval_s:
            return
        deadline = self._deadline()
        if deadline is not None and time.monotonic() > deadline + self._hard_kill_grace_s:
            log.critical("a function ignored its time limit for %gs: exiting the worker",
                         self._hard_kill_grace_s)
            logging.shutdown()
            os._exit(70)
        since = self._busy_since
        if since is None or time.monotonic() - since < self._grace_s:
            return
        if self._on_busy is not None and not self._busy_told:
            self._busy_told = True
            self._tell_busy()
        with self._lock:
            conn = self._conn
            if conn is None or self._busy_since is None:
                return
            self._last_pump = time.monotonic()
            try:
                conn.pump()
                running_s = time.monotonic() - since
                long_run = 0 < self._long_call_s < running_s
                if long_run and not self._long_call_handled and self._on_long_call:
                    self._long_call_handled = True
                    try:
                        self._on_long_call(conn)
                    except StoreError as exc:  # etcd away: the connection is fine
                        log.warning("holding a long call's deliveries in etcd failed (%s): "
                                    "again in %gs", exc, self._interval_s)
                        self._long_call_handled = False
            except DropletError as exc:
                # The main thread finds the connection broken at its next use.
                log.warning("broker connection lost during a long call: %s", exc)
                self._conn = None  # nothing more to keep alive on it

    def _flush_pending(self) -> None:
        since = self._busy_since
        # (a timed wait may end a hair before the mark it aimed at: then it is the mark)
        if self._flush is None or since is None or (
                time.monotonic() - since < self._flush_after_s - _EARLY_S):
            return
        if self._waiting_for_a_core():
            return
        with self._lock:
            if self._conn is None or self._busy_since is None:
                return
            try:
                self._flush()
            except Exception as exc:  # the main thread commits it later, or finds out why
                log.warning("committing finished calls during a long one failed: %s", exc)

    def _waiting_for_a_core(self) -> bool:
        """Whether the run has not been long but only kept from a core: it is runnable and
        has used less than flush_after_s of CPU. On a crowded host (more busy processes than
        cores) a quick call is often descheduled for tens of ms; committing its delivery's
        outcomes in pieces, or handing its calls back, would then only cost that host more.
        A run that sleeps, waits on I/O or computes that long is slow indeed."""
        try:
            clock = time.pthread_getcpuclockid(self._runner)
            used = time.clock_gettime(clock) - self._cpu_since
            with open(f"/proc/self/task/{self._runner_tid}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, AttributeError, ValueError, IndexError):  # not Linux: never
            return False
        return state == b"R" and used < self._flush_after_s

    def _tell_busy(self) -> None:
        try:
            assert self._on_busy is not None
            self._on_busy()
        except Exception as exc:
            log.debug("could not publish the busy status: %s", exc)
