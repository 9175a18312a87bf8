"""An in-memory broker with RabbitMQ's delivery semantics, for narrow unit tests.

Queues, per-consumer prefetch, acks, requeue of unacked deliveries when a connection closes,
dead-lettering through `x-dead-letter-routing-key`, and direct reply addresses. It is not a
substitute for RabbitMQ in end-to-end tests; it exists so that the thin service loops can be
exercised without a server, as Dramatiq's StubBroker does, and so that faults (a publish the
broker does not confirm, a connection that drops mid-cycle) can be injected at a chosen step.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from droplet.broker.interface import ConfirmCallback, Delivery, Topology
from droplet.errors import BrokerError, UnroutableError

_REPLY_PREFIX = "stub.reply."


@dataclass
class _Message:
    body: bytes
    reply_to: str | None
    correlation_id: str | None
    headers: Mapping[str, Any] | None
    redelivered: bool = False
    priority: int = 0


@dataclass
class _Queue:
    name: str
    arguments: Mapping[str, Any]
    ready: deque[_Message] = field(default_factory=deque)


@dataclass
class _Consumer:
    conn: StubConnection
    queue: str
    prefetch: int
    unacked: int = 0
    paused: bool = False


def _enqueue(queue: _Queue, message: _Message) -> None:
    """FIFO, except in a queue with x-max-priority: ahead of every lower priority, as
    RabbitMQ orders it (priorities above the maximum count as the maximum)."""
    top = int(queue.arguments.get("x-max-priority", 0))
    if not top:
        queue.ready.append(message)
        return
    rank = min(message.priority, top)
    index = len(queue.ready)
    while index > 0 and min(queue.ready[index - 1].priority, top) < rank:
        index -= 1
    queue.ready.insert(index, message)


class StubBroker:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.queues: dict[str, _Queue] = {}
        self.consumers: list[_Consumer] = []
        self._ids = itertools.count(1)
        self._turn = 0
        # Fault injection: (queue, body) -> True makes that publish fail its confirm, unrouted.
        self.nack_when: Callable[[str, bytes], bool] | None = None

    def connect(self, name: str = "stub") -> StubConnection:
        return StubConnection(self, next(self._ids))

    def declare_queue(self, name: str, arguments: Mapping[str, Any] | None = None) -> None:
        with self.lock:
            self.queues.setdefault(name, _Queue(name, dict(arguments or {})))

    def route(self, queue: str, message: _Message, mandatory: bool) -> None:
        with self.lock:
            if queue.startswith(_REPLY_PREFIX):
                conn_id = int(queue[len(_REPLY_PREFIX):])
                conn = next((c.conn for c in self.consumers if c.conn.id == conn_id), None)
                if conn is not None:
                    conn.replies.append(message)
                self.lock.notify_all()
                return
            target = self.queues.get(queue)
            if target is None:
                if mandatory:
                    raise UnroutableError(f"no queue {queue!r}")
                return
            _enqueue(target, message)
            self.lock.notify_all()

    def dispatch(self) -> None:
        """Moves ready messages to consumers with spare prefetch (round robin); locked."""
        if not self.consumers:
            return
        progress = True
        while progress:
            progress = False
            for offset in range(len(self.consumers)):
                index = (self._turn + offset) % len(self.consumers)
                consumer = self.consumers[index]
                queue = self.queues.get(consumer.queue)
                full = consumer.prefetch and consumer.unacked >= consumer.prefetch
                if queue is None or not queue.ready or full or consumer.paused:
                    continue
                message = queue.ready.popleft()
                consumer.unacked += 1
                consumer.conn.hand(consumer, message)
                self._turn = index + 1
                progress = True

    def queue_depth(self, name: str) -> int | None:
        with self.lock:
            queue = self.queues.get(name)
            return None if queue is None else len(queue.ready)


class StubConnection:
    def __init__(self, broker: StubBroker, conn_id: int) -> None:
        self._broker = broker
        self.id = conn_id
        self._open = True
        self._tags = itertools.count(1)
        self._pending: list[Delivery] = []
        self._unacked: dict[int, tuple[_Consumer, _Message]] = {}
        self._callbacks: deque[Callable[[], None]] = deque()
        self.replies: deque[_Message] = deque()

    @property
    def is_open(self) -> bool:
        return self._open

    def _check(self) -> None:
        if not self._open:
            raise BrokerError("stub connection is closed")

    def declare(self, topology: Topology) -> None:
        self._check()
        for queue in topology.queues:
            self._broker.declare_queue(queue.name, queue.arguments)

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        persistent: bool = True,
        mandatory: bool = False,
        on_confirm: ConfirmCallback | None = None,
        priority: int = 0,
        needs_confirm: bool = True,
    ) -> None:
        self._check()
        if reply_to == "amq.rabbitmq.reply-to":
            reply_to = f"{_REPLY_PREFIX}{self.id}"
        message = _Message(body, reply_to, correlation_id, headers, priority=priority)
        nack = self._broker.nack_when
        if nack is not None and nack(queue, body):
            ok = False  # injected: the broker lost it (or would not take it)
        else:
            try:
                self._broker.route(queue, message, mandatory)
                ok = True
            except UnroutableError:
                ok = False
        if on_confirm is not None:
            with self._broker.lock:
                self._callbacks.append(lambda: on_confirm(ok))
                self._broker.lock.notify_all()

    def consume(self, queue: str, *, prefetch: int, exclusive: bool = False) -> None:
        self._check()
        with self._broker.lock:
            if queue not in self._broker.queues:
                raise BrokerError(f"no queue {queue!r} to consume")
            self._broker.consumers.append(_Consumer(self, queue, prefetch))

    def pause(self, queue: str) -> None:
        self._check()
        with self._broker.lock:
            mine = [c for c in self._broker.consumers if c.conn is self and c.queue == queue]
            for consumer in mine:
                consumer.paused = True
            self._broker.lock.notify_all()

    def resume(self, queue: str) -> None:
        self._check()
        with self._broker.lock:
            for consumer in self._broker.consumers:
                if consumer.conn is self and consumer.queue == queue:
                    consumer.paused = False
            self._broker.lock.notify_all()

    def consuming(self, queue: str) -> bool:
        with self._broker.lock:
            return any(c.conn is self and c.queue == queue and not c.paused
                       for c in self._broker.consumers)

    def consume_replies(self) -> str:
        with self._broker.lock:
            self._broker.consumers.append(_Consumer(self, "", 0))
        return "amq.rabbitmq.reply-to"

    def hand(self, consumer: _Consumer, message: _Message) -> None:
        tag = next(self._tags)
        self._unacked[tag] = (consumer, message)
        self._pending.append(
            Delivery(consumer.queue, message.body, tag, message.reply_to,
                     message.correlation_id, message.redelivered, message.headers,
                     priority=message.priority)
        )

    def poll(self, timeout_s: float) -> list[Delivery]:
        self._check()
        deadline = time.monotonic() + timeout_s
        with self._broker.lock:
            while True:
                self._broker.dispatch()
                while self.replies:
                    m = self.replies.popleft()
                    self._pending.append(
                        Delivery("amq.rabbitmq.reply-to", m.body, 0, m.reply_to,
                                 m.correlation_id, False, m.headers)
                    )
                remaining = deadline - time.monotonic()
                if self._pending or self._callbacks or remaining <= 0:
                    break
                self._broker.lock.wait(remaining)
            callbacks = list(self._callbacks)
            self._callbacks.clear()
        for callback in callbacks:
            callback()
        out, self._pending = self._pending, []
        return out

    def pump(self) -> None:
        """Runs pending callbacks; deliveries stay for the next poll()."""
        self._check()
        with self._broker.lock:
            callbacks = list(self._callbacks)
            self._callbacks.clear()
        for callback in callbacks:
            callback()

    def _settle(self, tag: int) -> tuple[_Consumer, _Message]:
        entry = self._unacked.pop(tag, None)
        if entry is None:
            raise BrokerError(f"unknown delivery tag {tag}")
        entry[0].unacked -= 1
        return entry

    def written_together(self) -> AbstractContextManager[None]:
        return nullcontext()  # every publish and ack takes effect at once here

    def ack(self, tag: int, multiple: bool = False) -> None:
        self._check()
        with self._broker.lock:
            tags = [t for t in self._unacked if t <= tag] if multiple else [tag]
            for t in tags:
                self._settle(t)
            self._broker.lock.notify_all()

    def reject(self, tag: int, requeue: bool) -> None:
        self._check()
        with self._broker.lock:
            consumer, message = self._settle(tag)
            queue = self._broker.queues.get(consumer.queue)
            if requeue and queue is not None:
                message.redelivered = True
                queue.ready.appendleft(message)
            elif queue is not None and (dead := queue.arguments.get("x-dead-letter-routing-key")):
                target = self._broker.queues.get(str(dead))
                if target is not None:
                    target.ready.append(message)
            self._broker.lock.notify_all()

    def get(self, queue: str) -> Delivery | None:
        self._check()
        with self._broker.lock:
            q = self._broker.queues.get(queue)
            if q is None or not q.ready:
                return None
            message = q.ready.popleft()
            consumer = _Consumer(self, queue, 1, unacked=1)
            tag = next(self._tags)
            self._unacked[tag] = (consumer, message)
            return Delivery(queue, message.body, tag, message.reply_to,
                            message.correlation_id, message.redelivered, message.headers,
                            priority=message.priority)

    def queue_depth(self, queue: str) -> int | None:
        return self._broker.queue_depth(queue)

    def queue_info(self, queue: str) -> tuple[int, int] | None:
        with self._broker.lock:
            found = self._broker.queues.get(queue)
            if found is None:
                return None
            consumers = sum(1 for c in self._broker.consumers if c.queue == queue)
            return len(found.ready), consumers

    def delete_queue(self, queue: str, if_empty: bool = False) -> bool:
        with self._broker.lock:
            found = self._broker.queues.get(queue)
            consumed = any(c.queue == queue for c in self._broker.consumers)
            if if_empty and found is not None and (found.ready or consumed):
                return False
            self._broker.queues.pop(queue, None)
            return True

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self._check()
        with self._broker.lock:
            self._callbacks.append(fn)
            self._broker.lock.notify_all()

    def close(self) -> None:
        """Requeues everything unacked, as RabbitMQ does when a connection drops."""
        with self._broker.lock:
            if not self._open:
                return
            self._open = False
            for tag in sorted(self._unacked, reverse=True):  # back in their original order
                consumer, message = self._unacked[tag]
                queue = self._broker.queues.get(consumer.queue)
                if queue is not None:
                    message.redelivered = True
                    queue.ready.appendleft(message)
            self._unacked.clear()
            self._broker.consumers = [c for c in self._broker.consumers if c.conn is not self]
            self._broker.lock.notify_all()
