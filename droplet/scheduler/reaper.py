"""What a dead worker leaves behind: its queue, and the long calls it held as claims.

Nothing in either is lost or settled here: each message is moved to the schedulers' call queue,
marked as possibly done, and the call loop handles it as it handles everything (cycle.py): a
plain call is placed again (its worker first looks for a stored outcome), a DAG trigger goes on
to wherever its step is pinned now, a schedule notice is dropped, and so is a pin or unpin
request (its scheduler took no answer for a refusal). A message is acked (or its claim
deleted) only once the broker confirmed its move.

A scheduler claims the dead worker in etcd (a key under its own lease, so a reaper that dies
mid-way frees the claim), checks once more that the worker is really gone, drains its queue,
and deletes the queues and the worker's fleet entry. It uses a connection of its own:
inspecting a missing queue closes a channel, which must not take the scheduler's consumers
with it. Claims are settled when no live worker has their (id, incarnation): a worker that
restarted under the same id does not hold the claims of the process it replaced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from google.protobuf.message import DecodeError

from droplet.broker.interface import BrokerConnection, ConnectionFactory
from droplet.broker_config.names import RESENT_HEADER, QueueNames
from droplet.errors import BrokerError
from droplet.proto import pb
from droplet.scheduler.state import SchedulerState
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Delete, Put, ValueIs, VersionIs

log = logging.getLogger(__name__)

_CONFIRM_TIMEOUT_S = 10.0
_SETTLE_PAUSE_S = 0.3
_DELETE_TRIES = 5


class Reaper:
    def __init__(self, connect: ConnectionFactory, names: QueueNames, state: SchedulerState,
                 kv: KV, keys: StoreKeys, lease_id: Callable[[], int | None]) -> None:
        self._connect = connect
        self._names = names
        self._state = state
        self._kv = kv
        self._keys = keys
        self._lease_id = lease_id

    def dead_members(self) -> dict[str, bytes]:
        """Workers listed in the fleet that are not alive (by this scheduler's view), with
        their fleet entries."""
        items, _ = self._kv.get_prefix(self._keys.fleet)
        members = {StoreKeys.tail(k, self._keys.fleet): v for k, v in items.items()}
        return {w: v for w, v in members.items() if w not in self._state.workers}

    def reap(self, worker_id: str, entry: bytes) -> int:
        """Moves what worker_id left in its queue; returns how many messages.

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
            moved, gone = self._drain(worker_id)
            if gone:
                member = self._keys.fleet_member(worker_id)
                self._kv.txn([ValueIs(member, entry)], [Delete(member)])
            return moved
        finally:
            self._kv.delete(claim)

    def settle_claims(self) -> int:
        """Moves the long calls held by workers (incarnations) that are gone."""
        items, _ = self._kv.get_prefix(self._keys.claims)
        orphaned = []
        for key, raw in items.items():
            try:
                claim = pb.Claim.FromString(raw)
            except DecodeError:
                log.warning("skipping an unreadable claim %s", key)
                continue  # whoever planted it: the other claims are settled all the same
            if not self._incarnation_alive(claim.worker_id, claim.incarnation):
                orphaned.append((key, raw, claim))
        if not orphaned:
            return 0
        conn = self._connect()
        try:
            for key, raw, claim in orphaned:
                self._move(conn, claim.body, claim.reply_to, claim.correlation_id)
                self._kv.txn([ValueIs(key, raw)], [Delete(key)])
        finally:
            conn.close()
        return len(orphaned)

    def _alive(self, worker_id: str) -> bool:
        return self._kv.get(self._keys.worker(worker_id)) is not None

    def _incarnation_alive(self, worker_id: str, incarnation: str) -> bool:
        raw = self._kv.get(self._keys.worker(worker_id))
        if raw is None:
            return False
        try:
            status = pb.WorkerStatus.FromString(raw)
        except DecodeError:
            return True  # an unreadable record: settle nothing on its account
        return not incarnation or status.incarnation == incarnation

    def _drain(self, worker_id: str) -> tuple[int, bool]:
        """Moves what waits in the worker's queue; (how many, whether the queue is gone).

        A worker whose lease ran out may still be connected (a process paused past its
        lease, a VM cut off from etcd but not from the broker): it holds unacked deliveries,
        which deleting its queue would destroy. Its waiting messages are moved all the same,
        but its queue is only deleted once it has no consumer left."""
        queue = self._names.worker(worker_id)
        conn = self._connect()
        moved = 0
        try:
            if conn.queue_info(queue) is None:
                return 0, True
            # Twice, a moment apart: publishers with a stale view may still be sending.
            moved += self._drain_once(conn, queue)
            time.sleep(_SETTLE_PAUSE_S)
            moved += self._drain_once(conn, queue)
            info = conn.queue_info(queue)
            if info is not None and info[1] > 0:
                log.info("worker %s is gone from etcd but still consumes: its queue stays",
                         worker_id)
                return moved, False
            if not self._alive(worker_id):
                # Only empty: a publisher with a stale view (a client's DAG trigger) may have
                # sent one more since the drain, and deleting the queue would drop that call
                # (tests/unit/test_reaper_delete_if_empty.py). Only unused: the worker may
                # consume again meanwhile, holding unacked deliveries the broker's if-empty
                # does not count (test_reaper_delete_while_consumed.py). Drained, retried.
                for _ in range(_DELETE_TRIES):
                    if self._delete_if_empty(conn, queue):
                        break
                    moved += self._drain_once(conn, queue)
                else:
                    log.info("worker %s's queue keeps receiving, or is consumed again: it "
                             "stays for now", worker_id)
                    return moved, False
                # Messages to functions on a dead worker have no one left to read them.
                if conn.queue_depth(self._names.inbox(worker_id)) is not None:
                    conn.delete_queue(self._names.inbox(worker_id))
        finally:
            conn.close()
        return moved, True

    def _delete_if_empty(self, conn: BrokerConnection, queue: str) -> bool:
        """Deletes the queue if nothing waits in it; False if something does.

        RabbitMQ's quorum queues do not implement queue.delete's if-empty flag: it closes
        the whole connection (540 NOT_IMPLEMENTED), on every such delete
        (tests/attack/test_reaper_quorum_queue.py). Under quorum queues the check is the
        reaper's own, just before a plain delete: a message published in between is lost,
        a window the broker's check does not leave under classic queues."""
        if not self._names.quorum:
            return conn.delete_queue(queue, if_empty=True)
        info = conn.queue_info(queue)
        if info is not None and info != (0, 0):
            return False
        conn.delete_queue(queue)
        return True

    def _drain_once(self, conn: BrokerConnection, queue: str) -> int:
        moved = 0
        while (delivery := conn.get(queue)) is not None:
            self._move(conn, delivery.body, delivery.reply_to, delivery.correlation_id,
                       delivery.priority)
            conn.ack(delivery.tag)
            moved += 1
        return moved

    def _move(self, conn: BrokerConnection, body: bytes, reply_to: str | None,
              correlation_id: str | None, priority: int = 0) -> None:
        """Publishes a message to the call queue, marked as maybe done, and waits for the
        broker to confirm it."""
        outcome: list[bool] = []
        conn.publish(self._names.calls, body, reply_to=reply_to or None,
                     correlation_id=correlation_id or None, headers={RESENT_HEADER: 1},
                     mandatory=True, on_confirm=outcome.append, priority=priority)
        deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
        while not outcome and time.monotonic() < deadline:
            conn.poll(0.02)
        if not outcome or not outcome[0]:
            raise BrokerError("moving a dead worker's message was not confirmed")
