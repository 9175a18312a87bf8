"""RabbitMQ behind `BrokerConnection`; pika is imported only in broker/rabbitmq*.py.

One pika BlockingConnection with two channels. Durable messages go on a channel in confirm mode,
with asynchronous confirms: `publish` returns at once and the caller's `on_confirm` runs (inside
a later `poll`) when the broker has taken responsibility for the message. Services ack an
inbound message only from that callback, so a forward is never lost and the message flow never
waits for a confirm. Transient messages (replies to clients) go on a second channel without
confirms: a reply is only a fast path, what must last is in the store, and a confirm per reply
would cost the broker and the worker a frame for nothing.

This module publishes, polls and acks. Connecting across broker_url's nodes is
broker/rabbitmq_connect.py, the confirm bookkeeping broker/rabbitmq_confirms.py, consumers
and pausing them broker/rabbitmq_consumers.py, declaring and inspecting queues
broker/rabbitmq_topology.py. Every pika exception leaves as a
`BrokerError`, after which the connection is dropped and the owning service reconnects,
re-declares and resumes; unacked deliveries are requeued by the broker meanwhile, which makes
delivery at-least-once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from droplet.broker import rabbitmq_topology as topo
from droplet.broker.interface import ConfirmCallback, Delivery, Topology
from droplet.broker.nodes import NodeOrder
from droplet.broker.rabbitmq_confirms import PikaConfirms
from droplet.broker.rabbitmq_connect import connect_any, connection_parameters, converted
from droplet.broker.rabbitmq_consumers import Consumers, delivery
from droplet.broker.refusals import PRECONDITION_FAILED
from droplet.broker_config.names import private_reply_queue
from droplet.errors import QueueArgumentsError
from droplet.settings import Settings

__all__ = ["DIRECT_REPLY_TO", "RabbitConnection", "connect", "connection_parameters"]

log = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_PERSISTENT = 2
_TRANSIENT = 1
# Frames joined into one send (_write_out) while they are small: a large message goes frame by
# frame as pika sends it (a partial send re-queues what is left, which for one large joined
# buffer would copy it again and again).
_JOIN_FRAMES_MAX = 64
_JOIN_BYTES_MAX = 64 * 1024


class RabbitConnection:
    """`confirms=False` suits a client, which re-sends whatever is unanswered after a
    reconnect anyway: it saves the broker and itself a frame per message."""

    def __init__(self, settings: Settings, name: str = "droplet", confirms: bool = True,
                 nodes: NodeOrder | None = None) -> None:
        self._confirms = confirms
        self._private_replies = settings.broker_cluster
        self._consumers = Consumers()
        self._writing_later = False  # inside written_together(): queue frames, write at its end
        self._conn = connect_any(settings, name, nodes or NodeOrder(settings.broker_urls))
        self._pending = PikaConfirms(lambda fn: self._conn.call_later(0, fn))
        with converted("open channels"):
            self._open_channel()
            self._fast: BlockingChannel = self._conn.channel() if confirms else self._channel

    def _open_channel(self) -> None:
        self._channel: BlockingChannel = self._conn.channel()
        self._channel.add_on_cancel_callback(self._consumers.on_cancelled)
        self._pending.restart()
        if not self._confirms:
            return
        impl = self._channel._impl
        selected: list[bool] = []
        impl.confirm_delivery(ack_nack_callback=self._pending.on_confirm,
                              callback=selected.append)
        impl.add_on_return_callback(self._pending.on_return)
        while not selected:
            self._conn.process_data_events(time_limit=0.005)

    def _reopen_channel(self) -> None:
        """A new main channel after the broker closed it (the fast one too if it is the same)."""
        with converted("reopen channel"):
            fast_is_main = self._fast is self._channel
            self._open_channel()
            if fast_is_main:
                self._fast = self._channel

    @property
    def is_open(self) -> bool:
        return bool(self._conn.is_open and self._channel.is_open and self._fast.is_open)

    def declare(self, topology: Topology) -> None:
        try:
            topo.declare(self._channel, topology)
        except pex.ChannelClosedByBroker as exc:
            error = topo.refusal(exc)
            if not isinstance(error, QueueArgumentsError):
                raise error from None
            self._reopen_channel()
            raise error from None

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        persistent: bool = True,
        mandatory: bool = False,
        on_confirm: ConfirmCallback | None = None,
        priority: int = 0,
        needs_confirm: bool = True,
    ) -> None:
        confirmed = self._confirms and (mandatory or (persistent and needs_confirm))
        seq = self._pending.expect(on_confirm) if confirmed else 0
        props = pika.BasicProperties(
            delivery_mode=_PERSISTENT if persistent else _TRANSIENT,
            reply_to=reply_to,
            correlation_id=correlation_id,
            headers=dict(headers) if headers else None,
            message_id=str(seq) if mandatory and confirmed else None,
            priority=priority or None,
        )
        channel = self._channel if confirmed else self._fast
        with converted(f"publish to {queue}"):
            try:
                channel._impl.basic_publish("", queue, body, properties=props,
                                            mandatory=mandatory)
            except Exception:  # not encoded, or a closed channel: nothing of it was written
                if confirmed:  # (pika writes in _write_out), so the broker never numbers it
                    self._pending.withdraw(seq)
                raise
            if not self._writing_later:
                self._write_out(channel)
        if not confirmed and on_confirm is not None:
            self._pending.confirm_now(on_confirm)

    def consume(self, queue: str, *, prefetch: int, exclusive: bool = False) -> None:
        """Starts consuming queue with its own prefetch (per consumer)."""
        self._consumers.consume(self._channel, queue, prefetch, exclusive)

    def pause(self, queue: str) -> None:
        """Stops consuming queue; what the broker sent before comes with the next poll
        (Consumers.pause)."""
        self._consumers.pause(self._conn, self._channel, queue)

    def resume(self, queue: str) -> None:
        """Consumes a paused queue again."""
        self._consumers.resume(self._channel, queue)

    def consuming(self, queue: str) -> bool:
        return self._consumers.consuming(queue)

    def consume_replies(self) -> str:
        """The address replies to this connection go to: RabbitMQ's direct reply-to, or on a
        cluster an exclusive queue of this connection (names.REPLY_QUEUE_PREFIX says why)."""
        address = DIRECT_REPLY_TO
        with converted("consume replies"):
            if self._private_replies:
                address = private_reply_queue()
                self._channel.queue_declare(address, exclusive=True, auto_delete=True)
            self._consumers.consume_replies(self._channel, address)
            if address == DIRECT_REPLY_TO and self._fast is not self._channel:
                # (amqp.py consume_replies says why)
                self._consumers.consume_replies(self._fast, address)
        return address

    def poll(self, timeout_s: float) -> list[Delivery]:
        with converted("poll"):
            self._conn.process_data_events(
                time_limit=0 if self._consumers.inbox else timeout_s)
        return self._consumers.take()

    def pump(self) -> None:
        with converted("pump"):
            self._conn.process_data_events(time_limit=0)

    def ack(self, tag: int, multiple: bool = False) -> None:
        with converted("ack"):
            self._channel._impl.basic_ack(delivery_tag=tag, multiple=multiple)
            if not self._writing_later:
                self._write_out(self._channel)

    def _write_out(self, channel: BlockingChannel | None = None) -> None:
        """Writes what pika has buffered, in one send. pika hands the socket each frame on
        its own (a publish is three frames: method, header, body), and each send() is a
        system call and a packet for the broker; joined, a reply and its delivery's ack cost
        one (measured: 4 sends per plain call on a worker before, 1 after)."""
        buffers = getattr(getattr(self._conn._impl, "_transport", None), "_tx_buffers", None)
        if isinstance(buffers, deque) and 1 < len(buffers) <= _JOIN_FRAMES_MAX and sum(
                len(b) for b in buffers) <= _JOIN_BYTES_MAX:
            joined = b"".join(buffers)  # the byte count pika keeps is unchanged
            buffers.clear()
            buffers.append(joined)
        if channel is not None:
            channel._flush_output()  # raises as BlockingChannel would if the channel closed
        else:
            self._conn._flush_output()

    @contextmanager
    def written_together(self) -> Iterator[None]:
        """Frames queued inside are written at the end in one pass of pika's I/O loop (its
        blocking channel would write, and poll, after each)."""
        if self._writing_later:
            yield
            return
        self._writing_later = True
        try:
            yield
        finally:
            self._writing_later = False
            with converted("write"):
                self._write_out()

    def reject(self, tag: int, requeue: bool) -> None:
        with converted("reject"):
            self._channel.basic_reject(tag, requeue=requeue)

    def get(self, queue: str) -> Delivery | None:
        with converted(f"get from {queue}"):
            method, props, body = self._channel.basic_get(queue, auto_ack=False)
        return None if method is None else delivery(queue, method, props, body)

    def queue_depth(self, queue: str) -> int | None:
        info = self.queue_info(queue)
        return None if info is None else info[0]

    def queue_info(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers), None for a missing queue. A missing queue closes the
        channel and a fresh one is opened, which drops this connection's consumers: use it on
        connections that only inspect."""
        try:
            return topo.queue_info(self._channel, queue)
        except pex.ChannelClosedByBroker:
            self._reopen_channel()
            return None

    def delete_queue(self, queue: str, if_empty: bool = False) -> bool:
        with converted(f"delete {queue}"):
            try:
                self._channel.queue_delete(queue, if_unused=if_empty, if_empty=if_empty)
            except pex.ChannelClosedByBroker as exc:
                if not (if_empty and exc.reply_code == PRECONDITION_FAILED):
                    raise
                self._reopen_channel()  # (refused: a message waits there)
                return False
        return True

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        with converted("schedule callback"):
            self._conn.add_callback_threadsafe(fn)

    def close(self) -> None:
        try:
            if self._conn.is_open:
                self._conn.close()
        except Exception:  # closing a broken connection: nothing more to do
            log.debug("broker close failed", exc_info=True)


def connect(settings: Settings, name: str = "droplet", confirms: bool = True) -> RabbitConnection:
    return RabbitConnection(settings, name, confirms)
