"""Cancels as a worker sees them: skip a cancelled call, interrupt a running one.

A cancel is stored in etcd (client/cancel.py): the CANCELLED outcome of the call, and a record
under `cancels/<call id>` that every worker mirrors through a watch. So a cancel reaches every
worker, also one busy in a long call (whose consumers are paused and whose main thread runs
the function), one that was disconnected from RabbitMQ, and one that starts later; it needs no
exchange of its own, and it cannot be lost between a cancel and a delivery.

* Before a call (or a DAG step) runs, its call id is looked up in the mirror: a cancelled one
  does not run and answers CANCELLED. A worker that takes the call within the watch's delay
  after the cancel (milliseconds) starts it, and then interrupts it as below.
* A running call whose cancel arrives is interrupted the way a time limit is: the watch
  thread sends SIGUSR2 to the worker's own main thread, whose handler raises `CallCancelled`
  (a BaseException, so `except Exception` in the function does not swallow it) inside the
  function. That interrupts pure-Python loops and sleeps (time.sleep, lib.recv, lock waits)
  alike. Code stuck in C that never returns to the interpreter is not interrupted: after
  `hard_kill_grace_s` the keeper exits the worker (as for a time limit), the call is
  redelivered and answered from its stored CANCELLED outcome.

The handler raises only while `interruptible(call_id)` is active for that very call, so a
signal that arrives late (the call just returned) changes nothing: the stored outcome, written
first by the cancel, decides what every answer says.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from droplet.errors import Interruption
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.store.kv import KV
from droplet.store.mirror import PrefixMirror

log = logging.getLogger(__name__)

INTERRUPT_SIGNAL = signal.SIGUSR2


class CallCancelled(Interruption):
    """Raised inside a function whose call was cancelled while it ran."""


def cancelled_value(detail: str = "") -> pb.Value:
    message = "the call was cancelled" + (f" {detail}" if detail else "")
    return error_value(pb.CANCELLED, message, "", "CallCancelled" if detail else "")


class Cancellations:
    """Which calls are cancelled, and the interruption of the one running on the main
    thread. Without `start()` (handler unit tests) nothing is cancelled."""

    def __init__(self) -> None:
        self._mirror: PrefixMirror | None = None
        self._lock = threading.Lock()  # never taken by the signal handler
        self._running: str | None = None  # call id whose function runs now (main thread)
        # Another id that interrupts it too: a speculative copy's race, which the winning
        # copy "cancels" (worker/copies.py); that interruption never exits the worker.
        self._also: str | None = None
        self._interrupting: str | None = None
        self.cancelled_at: float | None = None  # monotonic time the running call's cancel came
        self._installed = False
        self._entering: tuple[str, str] = ("", "")  # interruptible()'s, for __enter__

    def start(self, kv: KV, prefix: str) -> Cancellations:
        """Mirrors the cancel records; installs the interrupt handler when on the main
        thread (elsewhere, running calls are not interrupted: tests over the stub broker)."""
        mirror = PrefixMirror(kv, prefix)
        mirror.on_change(self._changed)
        self._mirror = mirror.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(INTERRUPT_SIGNAL, self._on_signal)
            self._installed = True
        return self

    def close(self) -> None:
        if self._mirror is not None:
            self._mirror.close()

    def is_cancelled(self, call_id: str) -> bool:
        return bool(call_id) and self._mirror is not None and (
            self._mirror.get(call_id) is not None)

    def deadline(self) -> float | None:
        """When a running call that ignores its cancel gets its worker exited (the keeper
        adds hard_kill_grace_s), None when no running call is cancelled."""
        return self.cancelled_at

    def interruptible(self, call_id: str, also: str = "") -> Cancellations:
        """The stretch in which the function of call_id runs (on the main thread, entered
        with `with`); a cancel record of `also` interrupts it too. Its exit may itself be cut
        short by the one interrupt; `settle()` (run after the function's outcome is made)
        puts everything back in any case. Cancellations is its own context: entered around
        every call, it costs no generator and no object per call."""
        self._entering = (call_id, also)
        return self

    def __enter__(self) -> None:
        call_id, also = self._entering
        with self._lock:
            self._interrupting = None
            self.cancelled_at = None
            self._running = call_id
            self._also = also or None
        mirror = self._mirror
        if mirror is not None and (  # cancelled between the check and the run
                (call_id and mirror.get(call_id) is not None)
                or (also and mirror.get(also) is not None)):
            self._running = None
            self._also = None
            raise CallCancelled("before it started")

    def __exit__(self, *_: object) -> None:
        self._running = None  # first: from here on the handler raises nothing
        self._also = None

    def settle(self) -> None:
        with self._lock:
            self._running = None
            self._also = None
            self._interrupting = None
            self.cancelled_at = None

    def _changed(self, call_id: str, value: bytes | None) -> None:
        if value is None:
            return
        with self._lock:
            if call_id not in (self._running, self._also) or not self._installed:
                return
            self._interrupting = call_id
            if call_id == self._running:  # a lost race only interrupts, never exits
                self.cancelled_at = time.monotonic()
        log.info("interrupting the running call %s: it was cancelled", call_id)
        signal.pthread_kill(threading.main_thread().ident or 0, INTERRUPT_SIGNAL)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        """Runs on the main thread between two bytecodes of whatever it does: no lock here
        (the main thread may hold it), and it raises once per cancel, only inside
        `interruptible` of the cancelled call."""
        target = self._interrupting
        if target is not None and target in (self._running, self._also):
            self._interrupting = None
            raise CallCancelled("while it ran")
