"""`droplet migrate-queues`: re-create queues whose arguments changed, keeping their messages.

RabbitMQ never changes the arguments of a queue that exists (x-max-priority, added for call
priorities, a changed max_priority, or x-queue-type when queue_type changes between classic
and quorum): declaring it otherwise fails with PRECONDITION_FAILED,
which Droplet reports as `QueueArgumentsError`. This moves each such queue's messages to a
holding queue (`<queue>.migrating`), deletes the queue, declares it as this version does and
moves the messages back, each move confirmed by the broker before the original is acked. Run it
with the fleet stopped: a queue with consumers is left alone. Interrupted, it can be run again:
a holding queue left over is emptied into its queue first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import closing

from droplet.broker.interface import BrokerConnection, QueueSpec, Topology
from droplet.broker_config.names import QueueNames, can_be_queue
from droplet.broker_config.topology import (
    RETRY_BUCKETS,
    retry_topology,
    shared_topology,
    worker_topology,
)
from droplet.cli.shown import shown
from droplet.errors import BrokerError, QueueArgumentsError
from droplet.runtime import broker_factory, open_kv
from droplet.settings import Settings
from droplet.store.keys import StoreKeys

_CONFIRM_TIMEOUT_S = 30.0
HOLDING_SUFFIX = ".migrating"


def _specs(settings: Settings, names: QueueNames) -> list[QueueSpec]:
    """Every queue of the namespace Droplet declares with arguments: the shared ones and
    those of each worker etcd knows of (alive, or listed until its queue is drained). A key
    that is no worker id is passed over: its queues would be named after whatever it holds
    (an escape sequence printed raw, or over 255 bytes: ValueError, and nothing after it
    migrated)."""
    keys = StoreKeys(settings.etcd_prefix)
    with closing(open_kv(settings)) as kv:
        ids = {k[len(keys.fleet):] for k in kv.get_prefix(keys.fleet)[0]}
        ids |= {k[len(keys.workers):] for k in kv.get_prefix(keys.workers)[0]}
    specs = list(shared_topology(names).queues)
    for worker_id in sorted(ids):
        queues = (names.worker(worker_id), names.inbox(worker_id))
        if not worker_id.isprintable() or not all(map(can_be_queue, queues)):
            # No worker runs under it: a key written by hand, or garbage.
            print(shown(f"{worker_id[:60]!r}: passed over, not a worker id (under {keys.fleet} "
                        f"or {keys.workers} in etcd)"))
            continue
        specs += worker_topology(names, worker_id).queues
    return specs


def _move(conn: BrokerConnection, source: str, target: str) -> int:
    """Moves every message of source to target, acking each once the broker confirmed it."""
    moved = 0
    while (delivery := conn.get(source)) is not None:
        confirmed: list[bool] = []
        conn.publish(target, delivery.body, reply_to=delivery.reply_to,
                     correlation_id=delivery.correlation_id, headers=delivery.headers,
                     mandatory=True, on_confirm=confirmed.append, priority=delivery.priority)
        deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
        while not confirmed and time.monotonic() < deadline:
            conn.poll(0.02)
        if not confirmed or not confirmed[0]:
            raise BrokerError(f"moving a message from {source} to {target} was not confirmed")
        conn.ack(delivery.tag)
        moved += 1
    return moved


def migrate_queue(connect: Callable[[], BrokerConnection], spec: QueueSpec) -> str:
    """Brings one queue to its spec; says what it did."""
    holding = spec.name + HOLDING_SUFFIX
    with closing(connect()) as conn:
        info = conn.queue_info(spec.name)
        if info is not None and info[1] > 0:
            return f"{spec.name}: skipped, {info[1]} consumers (stop the fleet first)"
        leftover = conn.queue_info(holding)
        try:
            conn.declare(Topology(queues=[spec]))
            if leftover is None:
                return f"{spec.name}: up to date"
            moved = _move(conn, holding, spec.name)
            conn.delete_queue(holding)
            return f"{spec.name}: up to date; {moved} messages back from {holding}"
        except QueueArgumentsError:
            pass
    with closing(connect()) as conn:
        conn.declare(Topology(queues=[QueueSpec(holding, durable=True)]))
        held = _move(conn, spec.name, holding)
        if conn.queue_depth(spec.name):
            raise BrokerError(f"{spec.name} received messages while it was migrated: is the "
                              "fleet stopped? Run migrate-queues again once it is")
        conn.delete_queue(spec.name)
    # A fresh connection: a RabbitMQ 3.10 channel that used the old queue keeps its type, and
    # publishing to the re-created one (classic became quorum) crashes that channel.
    with closing(connect()) as conn:
        conn.declare(Topology(queues=[spec]))
        back = _move(conn, holding, spec.name)
        conn.delete_queue(holding)
    return f"{spec.name}: re-created with {dict(spec.arguments)}; {back} of {held} messages kept"


def _existing_retry_specs(connect: Callable[[], BrokerConnection],
                          names: QueueNames) -> list[QueueSpec]:
    """The retry and delay queues that exist (one per power-of-two delay, made on demand)."""
    specs = [retry_topology(names, 2**k).queues[0] for k in range(RETRY_BUCKETS)]
    with closing(connect()) as conn:
        return [spec for spec in specs if conn.queue_info(spec.name) is not None]


def run_migrate(settings: Settings) -> int:
    """0 when every queue is up to date; 1 when a queue with consumers was left alone (a
    script must not go on to start a fleet that its queues would refuse)."""
    names = QueueNames.of(settings)
    connect = broker_factory(settings, "droplet-migrate")
    left: list[str] = []
    for spec in _specs(settings, names) + _existing_retry_specs(connect, names):
        said = migrate_queue(connect, spec)
        print(said)
        if said.startswith(f"{spec.name}: skipped"):
            left.append(spec.name)
    if left:
        print(f"droplet: not migrated, they have consumers: {', '.join(left)}; stop the fleet "
              "and run migrate-queues again", file=sys.stderr)
        return 1
    return 0
