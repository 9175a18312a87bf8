"""Draining the queue of a dead worker (the broker side of healing.py).

A scheduler claims the dead worker in etcd (a key under its own lease, so a reaper that dies
mid-way frees the claim), checks once more that the worker is really gone, takes every message
out of its queue, settles each (healing.handle_orphan), acks it once the settlement is
published and stored, and deletes the queue and the worker's fleet entry. It uses a connection
of its own: inspecting a missing queue closes a channel, which must not take the scheduler's
consumers with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from droplet.broker import dispatch
from droplet.broker.interface import BrokerConnection, ConnectionFactory
from droplet.broker_config.names import QueueNames
from droplet.errors import DropletError
from droplet.outbox import Outbox
from droplet.proto import envelope, pb
from droplet.scheduler.healing import handle_orphan
from droplet.scheduler.state import SchedulerState
from droplet.signing import Signer
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Delete, Put, ValueIs, VersionIs
from droplet.store.values import ValueStore

log = logging.getLogger(__name__)

_CONFIRM_TIMEOUT_S = 10.0
_SETTLE_PAUSE_S = 0.3


class Reaper:
    def __init__(
        self,
        connect: ConnectionFactory,
        names: QueueNames,
        signer: Signer,
        state: SchedulerState,
        kv: KV,
        values: ValueStore,
        lease_id: Callable[[], int | None],
    ) -> None:
        self._connect = connect
        self._names = names
        self._signer = signer
        self._state = state
        self._kv = kv
        self._values = values
        self._keys = StoreKeys(values.keys.prefix)
        self._lease_id = lease_id

    def dead_members(self) -> dict[str, bytes]:
        """Workers listed in the fleet that are not alive (by this scheduler's view), with
        their fleet entries."""
        items, _ = self._kv.get_prefix(self._keys.fleet)
        members = {StoreKeys.tail(k, self._keys.fleet): v for k, v in items.items()}
        return {w: v for w, v in members.items() if w not in self._state.workers}

    def reap(self, worker_id: str, entry: bytes) -> int:
        """Settles what worker_id left behind; returns how many messages were settled.

        A worker restarted under the same id meanwhile writes a new fleet entry and comes
        alive again: the queue is then left to it and its entry is kept."""
        claim = self._keys.reaper(worker_id)
        claimed, _ = self._kv.txn(
            [VersionIs(claim, 0)],
            [Put(claim, self._state.scheduler_id.encode(), self._lease_id())],
        )
        if not claimed:
            return 0
        try:
            if self._alive(worker_id):
                return 0
            settled = self._drain(worker_id)
            member = self._keys.fleet_member(worker_id)
            self._kv.txn([ValueIs(member, entry)], [Delete(member)])
            return settled
        finally:
            self._kv.delete(claim)

    def settle_claims(self) -> int:
        """Settles long calls that a dead worker had acked and held as claims."""
        items, _ = self._kv.get_prefix(self._keys.claims)
        orphaned = []
        for key, raw in items.items():
            claim = pb.Claim()
            claim.ParseFromString(raw)
            if claim.worker_id not in self._state.workers and not self._alive(claim.worker_id):
                orphaned.append((key, raw, claim))
        if not orphaned:
            return 0
        settled = 0
        conn = self._connect()
        try:
            for key, raw, claim in orphaned:
                failed: set[str] = set()
                out = Outbox()
                try:
                    messages = envelope.decode(claim.body, self._signer)
                except DropletError as exc:
                    log.warning("dropping an unreadable claim of %s: %s", claim.worker_id, exc)
                    messages = []
                for message in messages:
                    handle_orphan(message, self._state, out, failed, claim.worker_id)
                if out.results:
                    self._values.write_results(out.results)
                self._publish_and_wait(conn, out)
                self._kv.txn([ValueIs(key, raw)], [Delete(key)])
                settled += len(messages)
        finally:
            conn.close()
        return settled

    def _alive(self, worker_id: str) -> bool:
        return self._kv.get(self._keys.worker(worker_id)) is not None

    def _drain(self, worker_id: str) -> int:
        queue = self._names.worker(worker_id)
        conn = self._connect()
        settled = 0
        try:
            if conn.queue_depth(queue) is None:
                return 0
            # Twice, a moment apart: publishers with a stale view may still be sending.
            settled += self._drain_once(conn, queue, worker_id)
            time.sleep(_SETTLE_PAUSE_S)
            settled += self._drain_once(conn, queue, worker_id)
            if not self._alive(worker_id):
                conn.delete_queue(queue)
                # Messages to functions on a dead worker have no one left to read them.
                if conn.queue_depth(self._names.inbox(worker_id)) is not None:
                    conn.delete_queue(self._names.inbox(worker_id))
        finally:
            conn.close()
        return settled

    def _drain_once(self, conn: BrokerConnection, queue: str, worker_id: str) -> int:
        settled = 0
        failed: set[str] = set()
        while (delivery := conn.get(queue)) is not None:
            try:
                messages = envelope.decode(delivery.body, self._signer)
            except DropletError as exc:
                log.warning("dead-lettering an unreadable message of %s: %s", worker_id, exc)
                conn.reject(delivery.tag, requeue=False)
                continue
            out = Outbox()
            for message in messages:
                handle_orphan(message, self._state, out, failed, worker_id)
            if out.results:
                self._values.write_results(out.results)
            self._publish_and_wait(conn, out)
            conn.ack(delivery.tag)
            settled += len(messages)
        return settled

    def _publish_and_wait(self, conn: BrokerConnection, out: Outbox) -> None:
        pending = [0]
        outcome = [True]

        def confirmed(ok: bool) -> None:
            pending[0] -= 1
            outcome[0] = outcome[0] and ok

        for queue, persistent, correlation_id, items in dispatch.group(out.sent):
            pending[0] += 1
            conn.publish(
                queue, envelope.encode((i.message for i in items), self._signer),
                persistent=persistent, mandatory=persistent, correlation_id=correlation_id,
                on_confirm=confirmed,
            )
        deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
        while pending[0] > 0 and time.monotonic() < deadline:
            conn.poll(0.05)
        if pending[0] > 0 or not outcome[0]:
            raise DropletError("settling a dead worker's message was not confirmed")
