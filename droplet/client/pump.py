"""The client's broker connection: publishing requests and routing replies to whoever waits.

There is no dedicated I/O thread on the hot path: the thread that waits for a reply drives the
connection itself (one broker round trip, no thread hand-offs). Other threads publishing at
that moment hand their publish to the driving thread; threads waiting for other replies sleep
until the driver routes them. A small keepalive thread pumps heartbeats while nobody waits,
and reconnects after a broker restart; requests still unanswered are then sent again (each
carries its call id, so a re-send is recognised downstream).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker_config.names import RESENT_HEADER, QueueNames
from droplet.broker_config.topology import shared_topology
from droplet.client.answers import answers_in
from droplet.client.refused import RefusedRequests
from droplet.errors import BrokerError, DropletError
from droplet.proto import pb
from droplet.signing import Signer

log = logging.getLogger(__name__)

_KEEPALIVE_S = 2.0
_DRIVE_SLICE_S = 0.05


@dataclass
class _Request:
    queue: str
    body: bytes
    correlation_id: str | None
    waiting: set[str]
    priority: int = 0
    persistent: bool = True


class AnswerWatcher(Protocol):
    def answered(self, key: str, response: pb.GenericResponse) -> None: ...

    def forget(self, key: str) -> None: ...


class ReplyPump:
    def __init__(self, connect: ConnectionFactory, names: QueueNames, signer: Signer) -> None:
        self._connect = connect
        self._names = names
        self._signer = signer
        self._io = threading.RLock()
        self._lock = threading.RLock()  # taken bare unless waiting or waking (fewer calls)
        self._cond = threading.Condition(self._lock)
        self._sleepers = 0  # threads in _cond.wait: nobody to notify when none (most calls)
        self._conn: BrokerConnection | None = None
        self._reply_address = ""
        self._responses: dict[str, pb.GenericResponse] = {}
        self._expected: set[str] = set()
        # Requests not fully answered yet, re-sent after a reconnect: first id -> request.
        self._inflight: dict[str, _Request] = {}
        self._request_of: dict[str, str] = {}
        # Told of every expected answer once it arrived, and of every key forgotten (the
        # client's call traces), outside the pump's lock.
        self.watcher: AnswerWatcher | None = None
        # Replies handed to a callback instead of a waiting thread (the asyncio client).
        self._listeners: dict[str, Callable[[pb.GenericResponse], None]] = {}
        self.generation = 0
        self._refused = RefusedRequests()  # by the broker (quorum queues): sent again later
        # Direct requests the broker returned: their fallbacks go out after the poll.
        self._unroutable: list[tuple[str, _Request]] = []
        self._closed = threading.Event()
        self._is_closed = False  # _closed, read per call without a Python call
        self.closed_reason = "the client is closed"
        with self._io:
            self._ensure()
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True,
                                           name="droplet-client-keepalive")
        self._keepalive.start()

    # -- sending ---------------------------------------------------------------------------

    def send(self, queue: str, body: bytes, ids: list[str], correlation_id: str | None = None,
             priority: int = 0, persistent: bool = True) -> None:
        """Publishes a request whose replies are keyed by `ids`; they stay in flight (and are
        re-sent after a reconnect) until answered or `forget`-ed. `persistent=False`: the
        broker keeps it in memory only (a restart of RabbitMQ drops it, and this client sends
        it again once reconnected)."""
        request = self._track(_Request(queue, body, correlation_id, set(ids), priority,
                                       persistent), ids)
        self._send_with(lambda conn: self._publish(conn, ids[0], request))

    def _track(self, request: _Request, ids: list[str]) -> _Request:
        if self._is_closed:
            raise DropletError(self.closed_reason)
        with self._lock:
            self._expected.update(ids)
            self._inflight[ids[0]] = request
            for key in ids:
                self._request_of[key] = ids[0]
        return request

    def _send_with(self, action: Callable[[BrokerConnection], None]) -> None:
        try:
            self._with_connection(action)
        except BrokerError as exc:
            # Kept in flight: the keepalive (or a waiting get) re-sends it after reconnecting.
            log.warning("request queued until the broker is back: %s", exc)

    def send_direct(self, queue: str, body: bytes, ids: list[str], fallback_queue: str,
                    fallback: bytes) -> None:
        """Publishes `body` to `queue` (a worker's) as `mandatory`; when the broker cannot
        route it (the queue is gone) `fallback` goes to `fallback_queue` instead. What stays
        in flight, and is re-sent after a reconnect, is the fallback: by then the worker may
        be gone. Needs a connection with confirms: without them nothing comes back."""
        request = self._track(_Request(fallback_queue, fallback, None, set(ids)), ids)

        def publish(conn: BrokerConnection) -> None:
            def confirmed(ok: bool) -> None:
                if not ok and self._inflight.get(ids[0]) is request and conn is self._conn:
                    self._unroutable.append((ids[0], request))  # sent after this poll

            conn.publish(queue, body, reply_to=self._reply_address, mandatory=True,
                         on_confirm=confirmed)

        self._send_with(publish)

    def _send_unroutable(self, conn: BrokerConnection) -> None:
        """Sends the fallbacks of direct requests the broker returned (driving thread)."""
        while self._unroutable:
            first, request = self._unroutable.pop(0)
            if self._inflight.get(first) is request:
                log.info("a worker queue is gone: request %s goes to the schedulers", first)
                self._publish(conn, first, request)

    def _publish(self, conn: BrokerConnection, first: str, request: _Request,
                 resent: bool = False) -> None:
        """Publishes a request. Under quorum queues the connection has confirms (see
        runtime.broker_factory), and a request the broker refuses (a nack: its queue had no
        leader for a moment) is sent again a second later (refused.py); a classic client
        re-sends only after a reconnect. The confirm runs inside the connection's poll, on
        the thread driving it."""
        def confirmed(ok: bool) -> None:
            if ok:
                self._refused.accepted()
            elif self._inflight.get(first) is request and conn is self._conn:
                self._refused.refused(first)

        conn.publish(request.queue, request.body, reply_to=self._reply_address,
                     correlation_id=request.correlation_id,
                     headers={RESENT_HEADER: 1} if resent else None,
                     priority=request.priority, persistent=request.persistent,
                     on_confirm=confirmed if self._names.quorum else None,
                     needs_confirm=self._names.quorum)  # else sent again after a reconnect

    def _send_refused(self, conn: BrokerConnection) -> None:
        """Sends again the refused requests whose back-off is over (driving thread)."""
        for first in self._refused.due():
            request = self._inflight.get(first)
            if request is not None:
                self._publish(conn, first, request, resent=True)

    def _with_connection(self, action: Callable[[BrokerConnection], None]) -> None:
        if self._io.acquire(blocking=False):
            try:
                self._attempt(action)
            finally:
                self._io.release()
            return
        conn = self._conn
        if conn is not None:
            try:
                conn.call_soon_threadsafe(lambda: action(conn))
                return
            except DropletError:
                pass
        with self._io:
            self._attempt(action)

    def _attempt(self, action: Callable[[BrokerConnection], None]) -> None:
        try:
            action(self._ensure())
        except BrokerError as exc:
            log.warning("broker connection lost while sending (%s); reconnecting", exc)
            self._drop()
            self._ensure()  # re-sends everything in flight, this request included

    # -- receiving -------------------------------------------------------------------------

    def connected(self) -> bool:
        """Whether the broker connection is open now (a hint for error messages)."""
        conn = self._conn
        return conn is not None and conn.is_open

    @property
    def closed(self) -> bool:
        return self._is_closed

    def in_flight(self) -> int:
        """How many answers have not come yet (read without the lock: a hint for spreading
        calls over workers)."""
        return max(0, len(self._expected) - len(self._responses))

    def wait(self, key: str, timeout_s: float,
             settled: Callable[[], bool] | None = None) -> pb.GenericResponse | None:
        """The reply for key, or None when none arrived within timeout_s, or once `settled`
        says the waiter has no more need of it (another thread took it for them)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if key in self._responses:
                    self._expected.discard(key)
                    return self._responses.pop(key)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._is_closed or (settled is not None and settled()):
                return None
            self._drive_or_wait(min(remaining, 1.0), key)

    def answer(self, key: str, response: pb.GenericResponse) -> None:
        """Settles a request this client answers itself (it was never sent)."""
        with self._lock:
            self._expected.add(key)
            self._responses[key] = response
            self._hand_over(key)
            self._cond.notify_all()

    def listen(self, key: str, callback: Callable[[pb.GenericResponse], None]) -> None:
        """Hands key's reply to callback (on whichever thread routes it; keep it quick)
        instead of keeping it for wait(); a reply that came already is handed over now."""
        with self._lock:
            self._expected.add(key)
            self._listeners[key] = callback
            self._hand_over(key)

    def _hand_over(self, key: str) -> None:
        if key in self._listeners and key in self._responses:
            self._expected.discard(key)
            self._listeners.pop(key)(self._responses.pop(key))

    def drive(self, timeout_s: float) -> None:
        """Routes replies for up to timeout_s (from a thread that only does that)."""
        self._drive_or_wait(timeout_s)

    def _drive_or_wait(self, timeout_s: float, key: str | None = None) -> None:
        """Drives the connection when no other thread does; else waits a slice for the
        driver to route (key's reply, when given, may be in already)."""
        if self._io.acquire(blocking=False):
            try:
                self._drive(timeout_s)
            finally:
                self._io.release()
            with self._lock:
                if self._sleepers:
                    self._cond.notify_all()
        else:
            with self._lock:
                if key is None or key not in self._responses:
                    self._sleepers += 1  # (left counted if wait raises: a notify in vain)
                    self._cond.wait(min(timeout_s, _DRIVE_SLICE_S))
                    self._sleepers -= 1

    def wake(self) -> None:
        """Ends a drive() waiting in poll (new work for the driving thread)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(DropletError):
                conn.call_soon_threadsafe(lambda: None)

    def release(self, key: str) -> None:
        """Nobody will wait for this key's reply, but its request stays in flight (and is
        re-sent after a reconnect) until the reply comes."""
        with self._lock:
            self._expected.discard(key)
            self._responses.pop(key, None)

    def forget(self, key: str) -> None:
        with self._lock:
            self._listeners.pop(key, None)
            self._expected.discard(key)
            self._responses.pop(key, None)
            self._answered(key)
        if self.watcher is not None:
            self.watcher.forget(key)

    def _answered(self, key: str) -> None:
        """Drops key from its request; the request is done once all its keys are."""
        first = self._request_of.pop(key, None)
        request = self._inflight.get(first) if first is not None else None
        if request is not None:
            request.waiting.discard(key)
            if not request.waiting:
                del self._inflight[first]  # type: ignore[arg-type]

    def _drive(self, timeout_s: float) -> None:
        try:
            conn = self._ensure()
            self._route(conn.poll(timeout_s))
            self._send_refused(conn)
            self._send_unroutable(conn)
        except BrokerError as exc:
            log.warning("broker connection lost (%s); reconnecting", exc)
            self._drop()
            time.sleep(0.2)

    def _route(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        arrived: list[tuple[str, pb.GenericResponse]] = []
        with self._lock:
            for delivery in deliveries:
                for key, response in answers_in(delivery, self._signer):
                    self._answered(key)
                    if key not in self._expected:
                        continue
                    if len(response.trace):
                        response.trace.add(stage="client.received", at_s=time.time())
                    self._responses[key] = response
                    arrived.append((key, response))
                    self._hand_over(key)
            if self._sleepers:
                self._cond.notify_all()
        if self.watcher is not None:
            for key, response in arrived:
                self.watcher.answered(key, response)

    # -- connection ------------------------------------------------------------------------

    def _ensure(self) -> BrokerConnection:
        """The open connection, reconnecting (and re-sending in-flight requests) if needed.
        Call with self._io held."""
        if self._conn is not None and self._conn.is_open:
            return self._conn
        self._drop()
        conn = self._connect()
        try:
            conn.declare(shared_topology(self._names))
            self._reply_address = conn.consume_replies()
            with self._lock:
                pending = list(self._inflight.items())
            self._refused.clear()  # every request in flight is sent again now
            self._unroutable.clear()
            self._conn = conn
            for first, request in pending:
                self._publish(conn, first, request, resent=True)
        except BaseException:
            self._conn = None
            conn.close()
            raise
        if self.generation and pending:
            log.info("reconnected to the broker; re-sent %d requests in flight", len(pending))
        self.generation += 1
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _keep_alive(self) -> None:
        while not self._closed.wait(_KEEPALIVE_S):
            if self._io.acquire(blocking=False):
                try:
                    self._drive(0)
                except DropletError as exc:
                    log.debug("keepalive could not reconnect yet: %s", exc)
                finally:
                    self._io.release()

    def disown(self, reason: str) -> None:
        """In a forked child (client/forks.py): the connection's socket is the parent's, so
        it is neither used nor closed here, and every request is refused with `reason`. The
        locks are new: a thread of the parent (none of which exists here) may have held one
        at the fork."""
        self._io = threading.RLock()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._conn = None
        self.closed_reason = reason
        self._is_closed = True

    def close(self) -> None:
        self._is_closed = True
        self._closed.set()
        with self._io:
            self._drop()
