"""Call priorities: what a caller may ask for, and what a message travels with.

A call carries `priority` (0, the default, to `max_priority`) in its FunctionCall, and every
broker message holding calls is published with that AMQP priority; the call, work and worker
queues are RabbitMQ priority queues, so a waiting urgent call is handed out before waiting
ordinary ones. Messages are split so that one envelope never mixes priorities.

What is promised, and what is not (README, Priorities): the order applies among calls that
wait in a queue. A call already handed to a worker (its prefetch: 1 message on the shared
queue, up to `own_queue_prefetch` on its own queue) and the calls travelling in the same
envelope run first, whatever comes later.
"""

from __future__ import annotations

import math

from droplet.errors import InvalidArgumentError
from droplet.proto import pb


def checked_priority(priority: object, max_priority: int) -> int:
    """A whole number from 0 to max_priority, or InvalidArgumentError."""
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise InvalidArgumentError(f"a priority is a whole number, not {priority!r}")
    if isinstance(priority, float) and (not math.isfinite(priority) or priority != int(priority)):
        raise InvalidArgumentError(f"a priority is a whole number, not {priority!r}")
    if not 0 <= priority <= max_priority:
        raise InvalidArgumentError(
            f"priority {priority} is outside 0..{max_priority} (the max_priority setting)")
    return int(priority)


# AMQP carries a priority in one octet; RabbitMQ treats anything above a queue's maximum as
# that maximum.
_AMQP_MAX_PRIORITY = 255


def message_priority(message: pb.Message) -> int:
    """The AMQP priority a message travels with: its call's (bounded to what AMQP can carry,
    whatever a message claims), else 0."""
    if message.WhichOneof("kind") != "call":
        return 0
    return min(message.call.priority, _AMQP_MAX_PRIORITY)
