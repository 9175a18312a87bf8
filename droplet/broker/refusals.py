"""What a declare the broker refused (it closed the channel) leaves as, for both transports.

Apart from either transport because the words are the operator's instructions: RabbitMQ
refuses a queue declared before with other arguments (an older Droplet, another max_priority
or queue_type) with PRECONDITION_FAILED, and that must say to migrate the queues rather than
read like a broken connection.
"""

from __future__ import annotations

from droplet.errors import BrokerError, QueueArgumentsError

PRECONDITION_FAILED = 406


def declare_refusal(reply_code: int, reply_text: str) -> BrokerError | QueueArgumentsError:
    """The error a declare closed by the broker leaves as; for a QueueArgumentsError the
    caller reopens its channel first (a BrokerError drops the connection anyway)."""
    if reply_code != PRECONDITION_FAILED:
        return BrokerError(f"RabbitMQ declare failed: ({reply_code}, {reply_text!r})")
    return QueueArgumentsError(
        f"RabbitMQ refused a queue's arguments ({reply_text}): it was declared "
        "differently, by an older Droplet or with another max_priority or queue_type "
        "(classic and quorum queues differ). Stop the fleet and run "
        "`droplet migrate-queues` (messages are kept)")
