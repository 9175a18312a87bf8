"""Recognising poison: a message that keeps killing the workers that run it.

Each time a message that may have been run before arrives (redelivered by the broker after a
connection died, or moved on by a scheduler from a dead worker's queue or long-call claim), its
count in etcd goes up; when the worker is done with it, whatever the outcome, the count is
deleted. Only a worker that dies while running it, or whose broker session ends with it in
hand, leaves the count behind, so past `dead_letter_max_redeliveries` the message is
dead-lettered and its call failed, instead of taking down worker after worker (or session
after session: a message can be what makes the broker close the connection). The count is
kept per message identity (a call id, a DAG step), not per body, so a step re-addressed to
another worker still counts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from droplet.acks import AckGate
from droplet.broker.interface import Delivery
from droplet.broker_config.names import RESENT_HEADER
from droplet.errors import DropletError, PoisonMessageError
from droplet.proto import envelope, pb
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV
from droplet.store.leases import LeasePool

log = logging.getLogger(__name__)

_COUNT_TTL_S = 3600


def identity(delivery: Delivery, messages: Sequence[pb.Message] | None = None
             ) -> tuple[str, bool]:
    """What a delivery is, whichever copy of it this is, and whether this copy may have run
    before (its `messages` when the caller decoded them, else read unverified: it only names
    a counter)."""
    maybe = delivery.redelivered or bool((delivery.headers or {}).get(RESENT_HEADER))
    if messages is None:
        messages = envelope.peek(delivery.body)
    if messages:
        message = messages[0]
        kind = message.WhichOneof("kind")
        if kind == "call" and message.call.call_id:
            return f"call {message.call.call_id}", maybe or message.call.maybe_done
        if kind == "trigger":
            t = message.trigger
            return f"step {t.id} {t.source} {t.target_function}", maybe or t.rerouted_since > 0
    return "body " + hashlib.sha1(delivery.body).hexdigest(), maybe


class PoisonCounter:
    def __init__(self, kv: KV, keys: StoreKeys, leases: LeasePool, limit: int) -> None:
        self._kv = kv
        self._keys = keys
        self._leases = leases
        self._limit = limit
        self._counting: dict[int, str] = {}  # id(delivery) -> key of its count
        # Counted deliveries run, whose gates still wait for confirms of what they published.
        self._unsettled: list[tuple[AckGate, Delivery]] = []

    def admit(self, delivery: Delivery, messages: Sequence[pb.Message] | None = None) -> None:
        """Counts a delivery that may have run before; raises PoisonMessageError past the
        limit."""
        name, maybe_run = identity(delivery, messages)
        if not maybe_run:
            return
        key = self._keys.delivery_count(hashlib.sha1(name.encode()).hexdigest())
        try:
            count = int(self._kv.get(key) or b"0") + 1
        except ValueError:
            count = 1  # garbage under deliveries/: start over
        self._kv.put(key, str(count).encode(), self._leases.lease(_COUNT_TTL_S))
        self._counting[id(delivery)] = key
        if count > self._limit:
            raise PoisonMessageError(
                f"delivered {count} times without completing (limit {self._limit}): it may "
                "crash the worker that runs it"
            )

    def ran(self, delivery: Delivery, gate: AckGate) -> None:
        """The message cycle is through with a delivery. Its count goes once its gate has
        ended it (every publish confirmed): RabbitMQ refuses a message over its
        max_message_size by closing the channel, read at the next poll, after this."""
        if gate.done or id(delivery) not in self._counting:
            self.done(delivery)
        else:
            self._unsettled.append((gate, delivery))

    def settle(self) -> None:
        """Clears the counts of deliveries ended since (all they published confirmed)."""
        if self._unsettled:
            for gate, delivery in self._unsettled:
                if gate.done:
                    self.done(delivery)
            self._unsettled = [(g, d) for g, d in self._unsettled if not g.done]

    def session_ended(self) -> None:
        """The connection went with confirms owed: what those deliveries published may be
        what the broker closed it over, so their counts stay."""
        for _gate, delivery in self._unsettled:
            self.forget(delivery)
        self._unsettled = []

    def forget(self, delivery: Delivery) -> None:
        """The delivery ended without completing (its session died): its count stays, but
        not this process's note of it, which a later delivery at the same address would
        otherwise take for its own."""
        self._counting.pop(id(delivery), None)

    def done(self, delivery: Delivery) -> None:
        """The worker lived through it: its count goes."""
        key = self._counting.pop(id(delivery), None)
        if key is not None:
            try:
                self._kv.delete(key)
            except DropletError as exc:
                log.debug("could not clear a delivery count: %s", exc)
