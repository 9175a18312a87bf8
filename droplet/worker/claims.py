"""Long calls: deliveries a worker acks before it has finished with them, held in etcd.

RabbitMQ closes the channel of a consumer that keeps a message unacked past its consumer
timeout (30 minutes by default), and the message is then redelivered while still running.
So once a batch has run `long_call_s`, the keeper thread writes each delivery in hand to a
claim under `claims/` and acks it. When the batch is done, the claims are deleted (or, if
its results could not be stored, their messages are published again). If the worker dies
meanwhile, a scheduler finds claims of a worker that is gone and settles them as it settles a
dead worker's queue (see scheduler/reaper.py).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.proto import pb
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV

log = logging.getLogger(__name__)


class LongCallClaims:
    def __init__(self, kv: KV, keys: StoreKeys, worker_id: str) -> None:
        self._kv = kv
        self._keys = keys
        self._worker_id = worker_id
        self._lock = threading.Lock()
        self._in_hand: list[Delivery] = []
        self._claimed: dict[int, str] = {}

    @contextmanager
    def holding(self, deliveries: list[Delivery]) -> Iterator[None]:
        with self._lock:
            self._in_hand = list(deliveries)
        try:
            yield
        finally:
            with self._lock:
                self._in_hand = []

    def claim_in_hand(self, conn: BrokerConnection) -> None:
        """Runs on the keeper thread, which holds the connection."""
        with self._lock:
            for delivery in self._in_hand:
                if delivery.tag in self._claimed:
                    continue
                key = self._keys.claim(f"{self._worker_id}.{uuid.uuid4().hex}")
                claim = pb.Claim(
                    worker_id=self._worker_id, queue=delivery.queue, body=delivery.body,
                    reply_to=delivery.reply_to or "",
                    correlation_id=delivery.correlation_id or "",
                )
                self._kv.put(key, claim.SerializeToString())
                conn.ack(delivery.tag)
                self._claimed[delivery.tag] = key
            count = len(self._claimed)
        log.info("a long call: %d deliveries acked and held as claims in etcd", count)

    def take(self) -> dict[int, str]:
        """The deliveries claimed during the batch just run (tag -> claim key)."""
        with self._lock:
            claimed, self._claimed = self._claimed, {}
        return claimed

    def settle(
        self, conn: BrokerConnection, claimed: dict[int, str], deliveries: list[Delivery],
        done: bool,
    ) -> None:
        """Deletes the claims of a finished batch; if it could not finish (its results were
        not stored), publishes their messages again first."""
        if not done:
            for delivery in deliveries:
                if delivery.tag in claimed:
                    conn.publish(delivery.queue, delivery.body, reply_to=delivery.reply_to,
                                 correlation_id=delivery.correlation_id)
        for key in claimed.values():
            self._kv.delete(key)
