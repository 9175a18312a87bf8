"""Ending deliveries once what they caused is safe, and packing messages into envelopes: the
mechanics under the message cycle (cycle.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.outbox import Outgoing
from droplet.priority import message_priority
from droplet.proto.envelope import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_MESSAGES, packed

log = logging.getLogger(__name__)



class Settlement(Protocol):
    """Ends deliveries that were acked early (long-call claims, see worker/claims.py)."""

    def release(self, delivery: Delivery, action: str) -> None: ...


class AckGate:
    """Ends one delivery (ack, requeue or dead-letter) once every expected confirm is in and
    release() was called. A confirm that fails turns an ack into a requeue."""

    def __init__(self, conn: BrokerConnection, delivery: Delivery | None,
                 settlement: Settlement | None = None) -> None:
        self._conn = conn
        self._delivery = delivery
        self._settlement = settlement
        self._pending = 0
        self._released = False
        self.action = "ack"
        self.done = False
        self.store_unavailable = False  # requeued because etcd was away

    def expect(self) -> Callable[[bool], None]:
        self._pending += 1
        return self._confirmed

    def _confirmed(self, ok: bool) -> None:
        self._pending -= 1
        if not ok and self.action == "ack":
            log.warning("a publish was not confirmed: the delivery goes back to its queue")
            self.action = "requeue"
        self._settle()

    def requeue(self) -> None:
        self.action = "requeue"

    def dead(self) -> None:
        if self.action == "ack":
            self.action = "dead"

    def release(self) -> None:
        self._released = True
        self._settle()

    def _settle(self) -> None:
        if self.done or not self._released or self._pending > 0:
            return
        self.done = True
        delivery = self._delivery
        if delivery is None:
            return
        if delivery.claim and self._settlement is not None:
            self._settlement.release(delivery, self.action)
        elif delivery.tag and self._conn.is_open:  # closed: the broker requeues it itself
            if self.action == "ack":
                self._conn.ack(delivery.tag)
            else:
                self._conn.reject(delivery.tag, requeue=self.action == "requeue")


Batch = tuple[str, bool, str | None, list[Outgoing]]


def group(outgoing: Iterable[Outgoing], split: dict[str, int] | None = None,
          max_bytes: int = MAX_ENVELOPE_BYTES) -> list[Batch]:
    """(queue, persistent, correlation id, items) batches, in first-seen order, each of one
    priority (droplet/priority.py); a queue in
    `split` gets envelopes of at most that many messages (so idle workers share a burst)."""
    batches: dict[tuple[str, bool, str | None, int], list[Outgoing]] = {}
    for item in outgoing:  # one priority to a message: calls of other priorities go apart
        key = (item.queue, item.persistent, item.correlation_id, message_priority(item.message))
        batches.setdefault(key, []).append(item)
    out = []
    for (queue, persistent, correlation_id, _priority), items in batches.items():
        size = max(1, (split or {}).get(queue, MAX_ENVELOPE_MESSAGES))
        for chunk in packed(items, size, lambda item: item.message.ByteSize(), max_bytes):
            out.append((queue, persistent, correlation_id, chunk))
    return out


def wait_settled(conn: BrokerConnection, gates: Iterable[AckGate], timeout_s: float) -> bool:
    """Pumps the connection until every gate has ended its delivery; for loops that take
    messages one by one (`get`) on a connection without consumers."""
    pending = list(gates)
    deadline = time.monotonic() + timeout_s
    while any(not g.done for g in pending):
        if time.monotonic() > deadline:
            return False
        conn.poll(0.02)
    return True
