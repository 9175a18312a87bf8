"""Turning an outbox into broker messages, and acking inbound messages only once they are safe.

Messages for one destination travel in one envelope (fewer broker operations under load), except
on the shared work queue, where calls are split into small envelopes so that idle workers share
them. `AckGate` holds inbound delivery tags until every publish they caused is confirmed and
their results are stored: only then are they acked (a failure requeues them instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from droplet.broker.interface import BrokerConnection
from droplet.outbox import Outgoing
from droplet.proto import envelope
from droplet.signing import Signer

log = logging.getLogger(__name__)

MAX_ENVELOPE_MESSAGES = 256


class AckGate:
    """Acks `tags` when all `expect()`ed confirmations arrived and `release()` was called."""

    def __init__(self, conn: BrokerConnection, tags: Sequence[int]) -> None:
        self._conn = conn
        self._tags = list(tags)
        self._pending = 0
        self._released = False
        self._ok = True
        self._done = False

    def expect(self) -> Callable[[bool], None]:
        self._pending += 1
        return self._confirmed

    def _confirmed(self, ok: bool) -> None:
        self._pending -= 1
        self._ok = self._ok and ok
        self._settle()

    def fail(self) -> None:
        self._ok = False

    def release(self) -> None:
        self._released = True
        self._settle()

    def _settle(self) -> None:
        if self._done or not self._released or self._pending > 0:
            return
        self._done = True
        if not self._tags or not self._conn.is_open:
            return  # closed: the broker requeues the deliveries itself
        if self._ok:
            for tag in self._tags:
                self._conn.ack(tag)
        else:
            log.warning("requeueing %d deliveries: a publish was not confirmed", len(self._tags))
            for tag in self._tags:
                self._conn.reject(tag, requeue=True)


Batch = tuple[str, bool, str | None, list[Outgoing]]


def group(outgoing: Iterable[Outgoing], chunked_queue: str = "", chunk: int = 1) -> list[Batch]:
    """(queue, persistent, correlation id, items) batches, in first-seen order."""
    batches: dict[tuple[str, bool, str | None], list[Outgoing]] = {}
    for item in outgoing:
        batches.setdefault((item.queue, item.persistent, item.correlation_id), []).append(item)
    out = []
    for (queue, persistent, correlation_id), items in batches.items():
        size = max(1, chunk) if queue == chunked_queue else MAX_ENVELOPE_MESSAGES
        for start in range(0, len(items), size):
            out.append((queue, persistent, correlation_id, items[start : start + size]))
    return out


def publish(
    conn: BrokerConnection,
    signer: Signer,
    outgoing: Iterable[Outgoing],
    gate: AckGate | None = None,
    chunked_queue: str = "",
    chunk: int = 1,
    on_lost: Callable[[list[Outgoing]], bool] | None = None,
) -> None:
    """Publishes the batches; `on_lost(items)` may take over a batch the broker could not
    route (returning True), which then no longer fails the gate."""
    for queue, persistent, correlation_id, items in group(outgoing, chunked_queue, chunk):
        body = envelope.encode((i.message for i in items), signer)
        confirmed = gate.expect() if gate is not None else None
        if confirmed is not None and on_lost is not None:
            confirmed = _rescued(confirmed, items, on_lost)
        conn.publish(
            queue,
            body,
            persistent=persistent,
            # A durable message must reach a queue: a missing worker queue is a failure.
            mandatory=persistent,
            correlation_id=correlation_id,
            on_confirm=confirmed,
        )


def _rescued(
    confirmed: Callable[[bool], None],
    items: list[Outgoing],
    on_lost: Callable[[list[Outgoing]], bool],
) -> Callable[[bool], None]:
    def callback(ok: bool) -> None:
        confirmed(ok or on_lost(items))

    return callback
