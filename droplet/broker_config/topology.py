"""The queues each process declares (idempotently) before it publishes or consumes."""

from __future__ import annotations

from droplet.broker.interface import QueueSpec, Topology
from droplet.broker_config.names import QueueNames

# A worker queue nobody has consumed for this long is deleted by RabbitMQ: its worker is
# long gone and its pins have moved elsewhere.
WORKER_QUEUE_EXPIRY_MS = 30 * 60 * 1000


def _dead_lettered(names: QueueNames, queue: str, **extra: object) -> QueueSpec:
    """A durable queue whose rejected messages go to the dead-letter queue."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": names.dead, **extra}
    return QueueSpec(queue, durable=True, arguments=arguments)


def _prioritised(names: QueueNames) -> dict[str, object]:
    """Queues that calls wait in order calls by priority (RabbitMQ's priority queues)."""
    return {"x-max-priority": names.max_priority} if names.max_priority > 0 else {}


def shared_topology(names: QueueNames) -> Topology:
    """What clients, schedulers and workers all need to exist."""
    return Topology(
        queues=[
            QueueSpec(names.dead, durable=True),
            _dead_lettered(names, names.calls, **_prioritised(names)),
            _dead_lettered(names, names.admin),
            _dead_lettered(names, names.work, **_prioritised(names)),
        ]
    )


def worker_topology(names: QueueNames, worker_id: str) -> Topology:
    expiry = {"x-expires": WORKER_QUEUE_EXPIRY_MS}
    return Topology(queues=[
        _dead_lettered(names, names.worker(worker_id), **expiry, **_prioritised(names)),
        _dead_lettered(names, names.inbox(worker_id), **expiry),
    ])


def retry_topology(names: QueueNames, delay_ms: int) -> Topology:
    """A queue whose messages expire after delay_ms into the scheduler's call queue."""
    queue = names.retry(delay_ms)
    bucket = names.retry_delay_ms(queue)
    return Topology(queues=[QueueSpec(queue, durable=True, arguments={
        "x-message-ttl": bucket,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.calls,
    })])
