"""The queues each process declares (idempotently) before it publishes or consumes.

Under `queue_type = "quorum"` every durable queue is a quorum queue, replicated over the
RabbitMQ cluster, so losing a node loses no message. Quorum queues of RabbitMQ 3.x refuse
`x-max-priority`, so the call, work and worker queues then have no priorities; messages that
die in them are dead-lettered at least once (`x-dead-letter-strategy`), which RabbitMQ allows
only with `x-overflow: reject-publish`. Reply queues are RabbitMQ's direct reply-to, never
declared here.
"""

from __future__ import annotations

from droplet.broker.interface import QueueSpec, Topology
from droplet.broker_config.names import QueueNames

# A worker queue nobody has consumed for this long is deleted by RabbitMQ: its worker is
# long gone and its pins have moved elsewhere.
WORKER_QUEUE_EXPIRY_MS = 30 * 60 * 1000
# Retry and delay queues wait 2**k ms, k below this (names.retry_bucket_ms caps at a day).
RETRY_BUCKETS = 28

QUORUM = {"x-queue-type": "quorum"}
# A dead-lettered message leaves a quorum queue only once its target queue has it.
_QUORUM_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once",
                          "x-overflow": "reject-publish"}


def _durable(names: QueueNames, queue: str, arguments: dict[str, object]) -> QueueSpec:
    """A durable queue; a quorum queue under queue_type quorum."""
    if names.quorum:
        extra = _QUORUM_DEAD_LETTERING if "x-dead-letter-exchange" in arguments else {}
        arguments = {**QUORUM, **arguments, **extra}
    return QueueSpec(queue, durable=True, arguments=arguments)


def _dead_lettered(names: QueueNames, queue: str, **extra: object) -> QueueSpec:
    """A durable queue whose rejected messages go to the dead-letter queue."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": names.dead, **extra}
    return _durable(names, queue, arguments)


def priorities_apply(names: QueueNames) -> bool:
    """Whether the call, work and worker queues order messages by priority."""
    return names.max_priority > 0 and not names.quorum


def priorities_note(names: QueueNames) -> str | None:
    """What schedulers and workers warn of at start when calls' priorities are ignored."""
    if names.quorum and names.max_priority > 0:
        return ("queue_type is quorum: RabbitMQ's quorum queues have no priorities, so calls "
                "are served in arrival order whatever their priority (set max_priority = 0 "
                "to silence this)")
    return None


def _prioritised(names: QueueNames) -> dict[str, object]:
    """Queues that calls wait in order calls by priority (RabbitMQ's priority queues)."""
    return {"x-max-priority": names.max_priority} if priorities_apply(names) else {}


def shared_topology(names: QueueNames) -> Topology:
    """What clients, schedulers and workers all need to exist."""
    return Topology(
        queues=[
            _durable(names, names.dead, {}),
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
    return Topology(queues=[_durable(names, queue, {
        "x-message-ttl": bucket,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.calls,
    })])
