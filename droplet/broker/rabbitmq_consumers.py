"""The consumers of one RabbitMQ connection: what it consumes, pausing and resuming, and its inbox.

Apart from the connection (broker/rabbitmq.py) because pausing a consumer without a single
delivery coming back as redelivered takes going under pika's blocking channel (see `pause`),
and because the broker may cancel a consumer by itself (its queue was deleted), which must
surface on the next poll so the owner reconnects and declares the queue again.
"""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from droplet.broker.interface import Delivery
from droplet.broker.rabbitmq_connect import converted
from droplet.errors import BrokerError


class Consumers:
    def __init__(self) -> None:
        self.inbox: list[Delivery] = []
        self._consumers: dict[str, str] = {}  # consumer tag -> queue
        self._by_queue: dict[str, tuple[str, int, bool]] = {}  # queue -> (tag, prefetch, excl)
        self._paused: dict[str, tuple[str, int, bool]] = {}
        self._cancelled: list[str] = []

    def on_cancelled(self, frame: Any) -> None:
        """The broker cancelled a consumer (its queue was deleted): make poll() fail so the
        owner reconnects and declares the queue again."""
        self._cancelled.append(self._consumers.get(frame.method.consumer_tag, "?"))

    def on_message(
        self, _ch: Any, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        self.inbox.append(delivery(self._consumers.get(method.consumer_tag, ""), method,
                                   props, body))

    def consume(self, channel: BlockingChannel, queue: str, prefetch: int, exclusive: bool
                ) -> None:
        """Starts consuming queue with its own prefetch (per consumer)."""
        with converted(f"consume {queue}"):
            channel.basic_qos(prefetch_count=prefetch)
            tag = channel.basic_consume(queue, self.on_message, exclusive=exclusive)
        self._consumers[tag] = queue
        self._by_queue[queue] = (tag, prefetch, exclusive)

    def consume_replies(self, channel: BlockingChannel, address: str) -> None:
        """Consumes replies to this connection, acked by the broker on delivery."""
        tag = channel.basic_consume(address, self.on_message, auto_ack=True)
        self._consumers[tag] = address

    def pause(self, conn: pika.BlockingConnection, channel: BlockingChannel, queue: str
              ) -> None:
        """Stops the consumer of queue and waits until the broker confirms it: every delivery
        the broker sent before that has arrived (the next poll returns it) and none arrives
        after. (pika's own cancel would reject what crosses the cancel, and a rejected delivery
        comes back marked as redelivered, as after a crash: so the cancel goes through pika's
        channel implementation, which is told to keep delivering until the broker's CancelOk.)"""
        held = self._by_queue.pop(queue, None)
        if held is None:
            return
        tag = held[0]
        impl = channel._impl
        done: list[bool] = []
        if tag not in impl._consumers:  # already cancelled by the broker: nothing to wait for
            self._paused[queue] = held
            return
        with converted(f"pause {queue}"):
            impl.basic_cancel(tag, callback=lambda _frame: done.append(True))
            impl._cancelled.discard(tag)
            while not done and not self._cancelled:
                conn.process_data_events(time_limit=0.005)
            conn.process_data_events(time_limit=0)  # hand over what crossed the cancel
            channel._consumer_infos.pop(tag, None)
        self._paused[queue] = held

    def resume(self, channel: BlockingChannel, queue: str) -> None:
        """Consumes a paused queue again."""
        held = self._paused.pop(queue, None)
        if held is not None:
            self.consume(channel, queue, prefetch=held[1], exclusive=held[2])

    def consuming(self, queue: str) -> bool:
        return queue in self._by_queue

    def take(self) -> list[Delivery]:
        """What arrived since the last take; fails if the broker cancelled a consumer."""
        if self._cancelled:
            raise BrokerError(f"the broker cancelled consuming {self._cancelled}")
        out, self.inbox = self.inbox, []
        return out


def delivery(queue: str, method: Any, props: pika.BasicProperties, body: bytes) -> Delivery:
    return Delivery(
        queue=queue,
        body=body,
        tag=method.delivery_tag,
        reply_to=props.reply_to,
        correlation_id=props.correlation_id,
        redelivered=bool(method.redelivered),
        headers=props.headers,
        priority=int(props.priority or 0),
    )
