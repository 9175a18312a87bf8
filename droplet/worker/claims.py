"""Long calls: deliveries a worker acks before it has finished with them, held in etcd.

RabbitMQ closes the channel of a consumer that keeps a message unacked past its consumer
timeout (30 minutes by default), and every unacked message then goes back to its queue while
its call is still running. So once a call has run `long_call_s`, the worker stops consuming
(nothing new arrives while it is busy), writes each delivery it holds to a claim under
`claims/` and acks it. When the cycle ends such a delivery, the claim is deleted (ack), or its
message is first published again to where it came from (requeue) or to the dead-letter queue.
If the worker dies meanwhile, or restarts under the same id, a scheduler finds claims whose
(worker, incarnation) is not alive and places their messages again (scheduler/reaper.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.broker_config.names import RESENT_HEADER, QueueNames
from droplet.proto import pb
from droplet.store.commits import MAX_TXN_BYTES
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV

log = logging.getLogger(__name__)


class LongCallClaims:
    def __init__(self, kv: KV, keys: StoreKeys, names: QueueNames, worker_id: str,
                 incarnation: str, connection: Callable[[], BrokerConnection | None]) -> None:
        self._kv = kv
        self._keys = keys
        self._names = names
        self._worker_id = worker_id
        self._incarnation = incarnation
        self._connection = connection

    def hold(self, conn: BrokerConnection, deliveries: Iterable[Delivery]) -> int:
        """Claims and acks each delivery not claimed yet; returns how many. A delivery too
        large for one etcd request stays unacked (open to the consumer timeout, as before
        claims existed): trying would only fail, and a failure here used to cost the worker
        its broker connection. etcd being away raises StoreError: the keeper tries again."""
        held = 0
        for delivery in deliveries:
            if delivery.claim or not delivery.tag:
                continue
            key = self._keys.claim(f"{self._worker_id}.{uuid.uuid4().hex}")
            claim = pb.Claim(
                worker_id=self._worker_id, incarnation=self._incarnation, queue=delivery.queue,
                body=delivery.body, reply_to=delivery.reply_to or "",
                correlation_id=delivery.correlation_id or "",
            )
            raw = claim.SerializeToString()
            if len(raw) > MAX_TXN_BYTES:
                log.warning(
                    "a delivery of %d bytes is too large to hold as a claim in etcd (at most "
                    "%d): it stays unacked, and RabbitMQ may hand it out again if this call "
                    "outlasts its consumer timeout (30 minutes by default)", len(raw),
                    MAX_TXN_BYTES)
                continue
            self._kv.put(key, raw)
            conn.ack(delivery.tag)
            delivery.claim = key
            held += 1
        if held:
            log.info("a long call: %d deliveries acked and held as claims in etcd", held)
        return held

    def release(self, delivery: Delivery, action: str) -> None:
        """Ends a claimed delivery as the cycle decided (the Settlement of cycle.py)."""
        if action == "ack":
            self._kv.delete(delivery.claim)
            return
        conn = self._connection()
        if conn is None:
            return  # the claim stays; a scheduler settles it if this worker dies
        self._send_back(conn, delivery,
                        delivery.queue if action == "requeue" else self._names.dead)

    def recover(self, conn: BrokerConnection, kept: set[str]) -> int:
        """At a new session: claims of this very process that no delivery in hand holds any
        more (the connection broke while they were in hand) go back to their queues, marked
        as maybe done, as a scheduler would settle them if this process had died."""
        items, _ = self._kv.get_prefix(self._keys.claims)
        recovered = 0
        for key, raw in items.items():
            if key in kept:
                continue
            try:
                claim = pb.Claim.FromString(raw)
            except Exception:
                continue
            if claim.worker_id != self._worker_id or claim.incarnation != self._incarnation:
                continue
            lost = Delivery(queue=claim.queue, body=claim.body, tag=0,
                            reply_to=claim.reply_to or None,
                            correlation_id=claim.correlation_id or None, claim=key)
            self._send_back(conn, lost, claim.queue)
            recovered += 1
        return recovered

    def _send_back(self, conn: BrokerConnection, delivery: Delivery, queue: str) -> None:
        claim_key = delivery.claim

        def published(ok: bool) -> None:
            if ok:
                self._kv.delete(claim_key)

        conn.publish(queue, delivery.body, reply_to=delivery.reply_to,
                     correlation_id=delivery.correlation_id, headers={RESENT_HEADER: 1},
                     mandatory=True, on_confirm=published, priority=delivery.priority)
