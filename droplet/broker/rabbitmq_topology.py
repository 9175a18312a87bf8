"""Declaring Droplet's exchanges, queues and bindings on a RabbitMQ channel, and inspecting queues.

Apart from publishing and consuming (broker/rabbitmq.py) because a refusal here is not a
broken connection: RabbitMQ refuses a queue declared before with other arguments (an older
Droplet, another max_priority or queue_type) by closing the channel, and a passive declare of
a missing queue does the same. Both close only the channel, and the caller reopens it; the
first must tell the operator to migrate the queues rather than reconnect forever.
"""

from __future__ import annotations

import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from droplet.broker.interface import Topology
from droplet.broker.refusals import declare_refusal
from droplet.errors import BrokerError, QueueArgumentsError


def declare(channel: BlockingChannel, topology: Topology) -> None:
    """Declares; a refused queue leaves as pika's ChannelClosedByBroker (see refusal)."""
    try:
        for exchange in topology.exchanges:
            channel.exchange_declare(
                exchange.name, exchange_type=exchange.kind, durable=exchange.durable
            )
        for queue in topology.queues:
            channel.queue_declare(
                queue.name,
                durable=queue.durable,
                exclusive=queue.exclusive,
                auto_delete=queue.auto_delete,
                arguments=dict(queue.arguments) or None,
            )
        for binding in topology.bindings:
            channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
    except pex.ChannelClosedByBroker:
        raise
    except (pex.AMQPError, OSError, AssertionError) as exc:
        raise BrokerError(f"RabbitMQ declare failed: {type(exc).__name__}: {exc}") from None


def refusal(exc: pex.ChannelClosedByBroker) -> BrokerError | QueueArgumentsError:
    """The error a declare closed by the broker leaves as (broker/refusals.py)."""
    return declare_refusal(exc.reply_code, exc.reply_text)


def queue_info(channel: BlockingChannel, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) by a passive declare. A missing queue closes the channel:
    pika's ChannelClosedByBroker leaves as it is, for the caller to reopen its channel."""
    try:
        frame = channel.queue_declare(queue, passive=True)
        return int(frame.method.message_count), int(frame.method.consumer_count)
    except pex.ChannelClosedByBroker:
        raise
    except (pex.AMQPError, OSError) as exc:
        raise BrokerError(f"RabbitMQ queue depth failed: {exc}") from None
