"""The one I/O thread of an asyncio client: it drives the broker connection and settles
awaitables on the event loop.

A call made from a coroutine gets an asyncio future at once and a listener in the reply pump
(client/pump.py); its sending is a job for this thread. The thread runs jobs, then polls the
connection (a new job wakes it from its poll), and each reply routed to a listener is settled
here: a result too large for a reply, or one whose reply was lost (a reconnect), is read from
the store on this thread too, never on the event loop. So there is one thread per client,
whatever the number of calls in flight, and the event loop never blocks on the broker or etcd.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from droplet.client.client import DropletClient
from droplet.errors import DropletError, DropletTimeoutError, error_from_info
from droplet.proto import pb
from droplet.store import serializer

log = logging.getLogger(__name__)

_STORE_CHECK_S = 2.0
_STORE_CHECKS_PER_ROUND = 200
_DRIVE_S = 0.5


@dataclass
class _Waiter:
    future: asyncio.Future[Any]
    stored: bool  # the outcome is in the store (not a direct response)
    since: float
    on_revision: Callable[[int], None] | None = None


class AioBridge:
    def __init__(self, client: DropletClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self._lock = threading.Lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._arrived: deque[tuple[str, pb.GenericResponse]] = deque()
        self._waiters: dict[str, _Waiter] = {}
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._next_check = time.monotonic() + _STORE_CHECK_S
        self._generation = client.pump.generation
        self._thread = threading.Thread(target=self._run, daemon=True, name="droplet-aio-io")
        self._thread.start()

    # -- from the event loop ---------------------------------------------------------------

    def expect(self, call_id: str, stored: bool,
               on_revision: Callable[[int], None] | None = None) -> asyncio.Future[Any]:
        """An asyncio future settled with call_id's outcome. A closed client refuses at once:
        nothing would ever send the call or settle its future, which timed out instead."""
        if self._closed.is_set():
            raise DropletError("the client is closed: connect again (droplet.aio.connect())")
        self.client.ensure_open()
        on_its_loop(self.loop)
        future: asyncio.Future[Any] = self.loop.create_future()
        with self._lock:
            self._waiters[call_id] = _Waiter(future, stored, time.monotonic(), on_revision)
        self.client.pump.listen(call_id, lambda response: self._arrive(call_id, response))
        return future

    def submit(self, job: Callable[[], None]) -> None:
        """Runs job on the I/O thread (sending); a failure settles nothing by itself."""
        with self._lock:
            self._jobs.append(job)
        self._wake.set()
        self.client.pump.wake()

    def fail(self, call_id: str, error: BaseException) -> None:
        """Settles call_id with error (its sending failed); callable from any thread."""
        with self._lock:
            waiter = self._waiters.pop(call_id, None)
        self.client.pump.forget(call_id)
        if waiter is not None:
            self._post(_settle, waiter.future, None, error)

    def close(self) -> None:
        """Stops the thread; whatever still waits fails at once instead of timing out."""
        self._closed.set()
        self._wake.set()
        self.client.pump.wake()
        self._thread.join(timeout=5)
        with self._lock:
            waiting, self._waiters = self._waiters, {}
        closed = DropletError("the client was closed before this call was answered")
        for call_id, waiter in waiting.items():
            self.client.pump.forget(call_id)
            self._post(_settle_closed, waiter.future, closed)

    # -- on the I/O thread -----------------------------------------------------------------

    def _arrive(self, call_id: str, response: pb.GenericResponse) -> None:
        """Called by the pump wherever it routes (keep it quick): settled by _run."""
        self._arrived.append((call_id, response))
        self._wake.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._round()
            except Exception:  # nothing may stop the thread that settles every future
                log.exception("the asyncio client's I/O thread hit an error; going on")
                time.sleep(0.1)

    def _round(self) -> None:
        with self._lock:
            jobs, self._jobs = list(self._jobs), deque()
            busy = bool(self._waiters)
        for job in jobs:
            job()
        self._settle_arrived()
        self._check_store()
        if busy:
            self.client.pump.drive(_DRIVE_S)
        else:
            self._wake.wait(_DRIVE_S)
        self._wake.clear()

    def _settle_arrived(self) -> None:
        while self._arrived:
            call_id, response = self._arrived.popleft()
            with self._lock:
                waiter = self._waiters.pop(call_id, None)
            if waiter is None:
                continue
            if waiter.on_revision is not None and response.revision:
                waiter.on_revision(response.revision)
            value: pb.Value | None = response.value
            if response.stored:
                try:
                    value = self.client.values.outcome(call_id)
                except DropletError as exc:  # etcd away: the store check reads it again
                    log.warning("could not read the outcome of %s (%s): again in %gs",
                                call_id, exc, _STORE_CHECK_S)
                    waiter.since = time.monotonic() - _STORE_CHECK_S  # due at the next check
                    with self._lock:
                        self._waiters.setdefault(call_id, waiter)
                    continue
            self._deliver(waiter, call_id, value)

    def _deliver(self, waiter: _Waiter, call_id: str, value: pb.Value | None) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            if value is None:
                raise DropletTimeoutError(f"result {call_id!r} has expired")
            loaded = serializer.load(value)
            if isinstance(loaded, pb.ErrorInfo):
                error = error_from_info(loaded)
            else:
                result = loaded
        except Exception as exc:  # a result this process cannot load (a module it lacks):
            error = exc  # the caller's error, as the threaded get() raises it; it was only
            # logged here, and the call timed out
        self._post(_settle, waiter.future, result, error)

    def _post(self, settle: Callable[..., None], *args: Any) -> None:
        """Settles a future on its loop; a loop closed meanwhile has nobody left to await it
        (a RuntimeError here was logged as the I/O thread's error, with a traceback, once
        for every call that was still in flight)."""
        try:
            self.loop.call_soon_threadsafe(settle, *args)
        except RuntimeError:
            if not self.loop.is_closed():
                raise

    def _check_store(self) -> None:
        """Outcomes whose reply was lost (a reconnect) are read from the store: every 2 s
        for calls waiting longer than that, at once after a reconnect."""
        pump = self.client.pump
        now = time.monotonic()
        if now < self._next_check and pump.generation == self._generation:
            return
        self._next_check = now + _STORE_CHECK_S
        self._generation = pump.generation
        with self._lock:
            due = [(k, w) for k, w in self._waiters.items()
                   if w.stored and now - w.since > _STORE_CHECK_S][:_STORE_CHECKS_PER_ROUND]
        for call_id, waiter in due:
            value = self.client.values.outcome(call_id)
            if value is None:
                continue
            with self._lock:
                if self._waiters.pop(call_id, None) is None:
                    continue
            pump.forget(call_id)
            self._deliver(waiter, call_id, value)


def on_its_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Refuses a call made or awaited on another event loop than the client's (one
    asyncio.run() each, say): asyncio's own error said "The future belongs to a different
    loop than the one specified as the loop argument", after the call was sent."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # none runs: the call is made now, to be awaited on its loop
        return
    if running is not loop:
        raise DropletError("this asyncio client belongs to the event loop it was connected "
                           "on: connect again on this one (droplet.aio.connect())")


def _settle_closed(future: asyncio.Future[Any], error: BaseException) -> None:
    """A call its own client's close() left unanswered: awaiting it raises `error`, and one
    nobody awaits any more (its task was cancelled, by Ctrl-C say) is not reported at exit as
    "Future exception was never retrieved"."""
    _settle(future, None, error)
    if future.done() and not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
