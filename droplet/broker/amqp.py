"""RabbitMQ behind `BrokerConnection` with Droplet's own lean AMQP 0-9-1 client (the default
transport; settings.broker_transport = "pika" selects broker/rabbitmq.py instead).

Why: pika's general machinery (frame objects, property objects, its callback and I/O loop
layers) was the largest share of every message hop, about 270 Python calls per request on a
worker against Droplet's own 120. Here a publish is encoded straight into one bytes and
queued, an ack is one struct.pack, and deliveries are unpacked in place from the read buffer
(broker/amqp_reader.py); the socket, handshake and heartbeats are broker/amqp_wire.py and the
byte codec broker/amqp_frames.py.

The semantics are RabbitConnection's, which the services rely on: durable messages go on a
channel in confirm mode whose confirms become on_confirm callbacks run from a later poll
(broker/confirms.py); transient ones on a second channel without confirms; a refused declare
reopens the channel and raises QueueArgumentsError; a missing queue's queue_info is None;
pause() returns once the broker confirmed the cancel, every delivery before it in hand; a
consumer the broker cancels fails the next poll. Every socket or protocol failure leaves as a
BrokerError, after which the owner reconnects (broker/session.py).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from droplet.broker import amqp_frames as f
from droplet.broker.amqp_topology import FAILURES as _FAILURES
from droplet.broker.amqp_topology import AmqpTopology
from droplet.broker.amqp_wire import Wire, open_wire
from droplet.broker.confirms import PublisherConfirms
from droplet.broker.connecting import endpoint, first_node
from droplet.broker.interface import ConfirmCallback, Delivery
from droplet.broker.nodes import NodeOrder
from droplet.broker_config.names import private_reply_queue
from droplet.errors import BrokerError
from droplet.settings import Settings

__all__ = ["DIRECT_REPLY_TO", "AmqpConnection", "connect"]

log = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_CONTENT_HEAD = struct.Struct(">BHIHHQH").pack  # frame head, class, weight, size, flags
_BODY_HEAD = struct.Struct(">BHI").pack
_TAG_BIT = struct.Struct(">QB").pack
_SHORT = struct.Struct(">B").pack


class AmqpConnection(AmqpTopology):
    """`confirms=False` suits a client, which re-sends whatever is unanswered after a
    reconnect anyway: it saves the broker and itself a frame per message."""

    def __init__(self, settings: Settings, name: str = "droplet", confirms: bool = True,
                 nodes: NodeOrder | None = None) -> None:
        order = nodes or NodeOrder(settings.broker_urls)

        def attempt(index: int) -> tuple[Wire, str]:
            ep = endpoint(settings, order.urls[index])
            return open_wire(settings, ep, name), ep.address

        wire = first_node(name, order, attempt)
        callbacks: list[Callable[[], None]] = []
        super().__init__(wire, PublisherConfirms(callbacks.append) if confirms else None)
        self._callbacks = callbacks
        self._confirms = confirms
        self._private_replies = settings.broker_cluster
        self._by_queue: dict[str, tuple[str, int, bool]] = {}  # queue -> (tag, prefetch, excl)
        self._paused: dict[str, tuple[str, int, bool]] = {}
        self._writing_later = False  # inside written_together(): queue, write at its end
        self._prefixes: dict[tuple[int, str, bool], bytes] = {}
        self._last_channel = 0
        self._tags = 0
        try:
            self._open_main()
            self._fast = self._new_channel(False) if confirms else self._main
        except _FAILURES as exc:
            raise self._failed("open channels", exc) from None

    def _new_channel(self, confirm: bool) -> int:
        self._last_channel += 1
        self._open_channel(self._last_channel, confirm)
        return self._last_channel

    def _open_main(self) -> None:
        """The channel of consumers, acks, declares and (with confirms) durable publishes; a
        fresh one after the broker closed it (the fast one too when it is the same)."""
        old = getattr(self, "_main", 0)
        if old in self._dead:  # closed by the broker and answered: its number is free again
            self._open_channel(old, self._confirms)  # (new numbers would run out: 2047)
        else:
            self._main = self._new_channel(self._confirms)
        self._confirm_channel = self._main
        if self._pending is not None:
            self._pending.restart()
        self._ack_head = f.FRAME_HEAD.pack(f.FRAME_METHOD, self._main, 13) + struct.pack(
            ">I", f.ACK)
        if old and getattr(self, "_fast", 0) == old:
            self._fast = self._main
        self._dead.pop(old, None)  # replaced: what closed it is answered

    @property
    def is_open(self) -> bool:
        return not self._wire.closed and self._main not in self._dead and (
            self._fast not in self._dead)

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
        pending = self._pending
        confirmed = pending is not None and (mandatory or (persistent and needs_confirm))
        ch = self._main if confirmed else self._fast
        if self._dead and ch in self._dead:
            raise BrokerError(f"RabbitMQ publish to {queue} failed: {self._dead[ch]}")
        prefix = self._prefixes.get((ch, queue, mandatory))
        if prefix is None:
            if len(self._prefixes) > 4096:  # reply addresses of clients long gone
                self._prefixes.clear()
            prefix = self._prefixes[(ch, queue, mandatory)] = f.publish_prefix(ch, queue,
                                                                                mandatory)
        # Properties in flag order: headers, delivery mode, priority, correlation id,
        # reply-to, message id.
        flags = f.P_DELIVERY_MODE
        props = b"\x02" if persistent else b"\x01"
        if headers:
            flags |= f.P_HEADERS
            props = f.encode_table(headers) + props
        if priority:
            flags |= f.P_PRIORITY
            props += _SHORT(priority)
        if correlation_id is not None:
            flags |= f.P_CORRELATION_ID
            raw = correlation_id.encode()
            props += _SHORT(len(raw)) + raw
        if reply_to is not None:
            flags |= f.P_REPLY_TO
            raw = reply_to.encode()
            props += _SHORT(len(raw)) + raw
        # Numbered only now: a property that would not encode (raising above) must not take
        # a confirm number the broker never gives (every later confirm would go to the
        # callback of the publish before it: tests/attack/test_failed_publish_shifts_confirms).
        message_id = None
        if confirmed:
            seq = pending.expect(on_confirm)  # type: ignore[union-attr]
            message_id = str(seq) if mandatory else None
        if message_id is not None:
            flags |= f.P_MESSAGE_ID
            props += _SHORT(len(message_id)) + message_id.encode()
        wire = self._wire
        size = len(body)
        try:
            if 0 < size <= wire.frame_max - 8:
                wire.out.append(b"".join((
                    prefix, _CONTENT_HEAD(2, ch, 14 + len(props), 60, 0, size, flags), props,
                    b"\xce", _BODY_HEAD(3, ch, size), body, b"\xce")))
            else:  # empty (no body frame at all) or over frame_max (several)
                wire.out.append(prefix)
                wire.out.extend(f.content_frames(ch, props, flags, body, wire.frame_max))
            if not self._writing_later:
                wire.flush()
        except _FAILURES as exc:
            raise self._failed(f"publish to {queue}", exc) from None
        if on_confirm is not None and not confirmed:
            self._confirm_now(on_confirm)

    def _confirm_now(self, on_confirm: ConfirmCallback) -> None:
        """A publish that gets no confirm from the broker: on_confirm(True) from the next
        poll."""
        self._callbacks.append(lambda: on_confirm(True))

    def consume(self, queue: str, *, prefetch: int, exclusive: bool = False) -> None:
        """Starts consuming queue with its own prefetch (per consumer)."""
        try:
            self._rpc(self._main, f.QOS, struct.pack(">IHB", 0, prefetch, 0), f.QOS_OK)
            tag = self._consume(queue, exclusive=exclusive, no_ack=False)
        except _FAILURES as exc:
            raise self._failed(f"consume {queue}", exc) from None
        self._by_queue[queue] = (tag, prefetch, exclusive)

    def _consume(self, queue: str, exclusive: bool, no_ack: bool, channel: int = 0) -> str:
        channel = channel or self._main
        self._tags += 1
        tag = f"ctag{channel}.{self._tags}"
        self._consumers[tag] = queue
        self._rpc(channel, f.CONSUME, b"\0\0" + f.shortstr(queue) + f.shortstr(tag) + f.bits(
            False, no_ack, exclusive, False) + f.encode_table({}), f.CONSUME_OK)
        return tag

    def pause(self, queue: str) -> None:
        """Stops the consumer of queue and waits for the broker's CancelOk: every delivery
        it sent before has arrived (the next poll returns it), none comes after, and none is
        rejected back (which would mark it redelivered)."""
        held = self._by_queue.pop(queue, None)
        if held is None:
            return
        self._paused[queue] = held
        if queue in self._cancelled:  # already cancelled by the broker
            return
        try:
            self._rpc(self._main, f.CANCEL, f.shortstr(held[0]) + b"\0", f.CANCEL_OK)
        except _FAILURES as exc:
            raise self._failed(f"pause {queue}", exc) from None
        self._consumers.pop(held[0], None)

    def resume(self, queue: str) -> None:
        """Consumes a paused queue again, with the same prefetch."""
        held = self._paused.pop(queue, None)
        if held is not None:
            self.consume(queue, prefetch=held[1], exclusive=held[2])

    def consuming(self, queue: str) -> bool:
        return queue in self._by_queue

    def consume_replies(self) -> str:
        """The address replies to this connection go to: RabbitMQ's direct reply-to, or on a
        cluster an exclusive queue of this connection (names.REPLY_QUEUE_PREFIX says why)."""
        address = DIRECT_REPLY_TO
        try:
            if self._private_replies:
                address = private_reply_queue()
                self._rpc(self._main, f.QUEUE_DECLARE, b"\0\0" + f.shortstr(address) + f.bits(
                    False, False, True, True) + f.encode_table({}), f.QUEUE_DECLARE_OK)
            self._consume(address, exclusive=False, no_ack=True)
            if address == DIRECT_REPLY_TO and self._fast != self._main:
                # Direct reply-to answers the channel that published: requests sent without
                # confirms (publish's needs_confirm) go on the fast channel, and so must be
                # consumed there too.
                self._consume(address, exclusive=False, no_ack=True, channel=self._fast)
        except _FAILURES as exc:
            raise self._failed("consume replies", exc) from None
        return address

    def poll(self, timeout_s: float) -> list[Delivery]:
        try:
            wire = self._wire
            if wire.read():
                self._parse()
            if timeout_s > 0 and not (self._inbox or self._callbacks or self._threadsafe
                                      or self._dead or self._cancelled):
                self._wait(timeout_s)
            self._service()
            self._run_callbacks()
        except _FAILURES as exc:
            raise self._failed("poll", exc) from None
        if self._cancelled:
            raise BrokerError(f"the broker cancelled consuming {self._cancelled}")
        if self._dead:
            raise BrokerError(f"RabbitMQ poll failed: {next(iter(self._dead.values()))}")
        inbox = self._inbox
        self._inbox = []
        return inbox

    def _wait(self, timeout_s: float) -> None:
        """Waits until a delivery or a callback is due, the broker closed a channel or cancelled
        a consumer (poll raises: the owner reconnects now, not once timeout_s is out), or
        timeout_s passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._wait_step(timeout_s)
            if (self._inbox or self._callbacks or self._threadsafe or self._dead
                    or self._cancelled):
                return
            timeout_s = deadline - time.monotonic()
            if timeout_s <= 0:
                return

    def pump(self) -> None:
        try:
            if self._wire.read():
                self._parse()
            self._service()
            self._run_callbacks()
        except _FAILURES as exc:
            raise self._failed("pump", exc) from None

    def ack(self, tag: int, multiple: bool = False) -> None:
        wire = self._wire
        wire.out.append(self._ack_head + _TAG_BIT(tag, multiple) + b"\xce")
        if not self._writing_later:
            try:
                wire.flush()
            except _FAILURES as exc:
                raise self._failed("ack", exc) from None

    @contextmanager
    def written_together(self) -> Iterator[None]:
        """Publishes and acks inside are queued and written at its end, joined into as few
        sends as their sizes allow (broker/amqp_wire.py)."""
        if self._writing_later:
            yield
            return
        self._writing_later = True
        try:
            yield
        finally:
            self._writing_later = False
            try:
                self._wire.flush()
            except _FAILURES as exc:
                raise self._failed("write", exc) from None

    def reject(self, tag: int, requeue: bool) -> None:
        try:
            self._wire.send(f.method_frame(self._main, f.REJECT, _TAG_BIT(tag, requeue)))
        except _FAILURES as exc:
            raise self._failed("reject", exc) from None

    def get(self, queue: str) -> Delivery | None:
        """Takes one message without a consumer (manual ack), or None when empty."""
        try:
            self._got = None
            method, _ = self._rpc(self._main, f.GET, b"\0\0" + f.shortstr(queue) + b"\0",
                                  f.GET_OK, f.GET_EMPTY)
            if method == f.GET_EMPTY:
                return None
            while self._got is None:
                self._wait_step(1.0)
        except _FAILURES as exc:
            raise self._failed(f"get from {queue}", exc) from None
        got, self._got = self._got, None
        got.queue = queue
        return got

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        if self._wire.closed:
            raise BrokerError("RabbitMQ schedule callback failed: the connection is closed")
        self._threadsafe.append(fn)
        self._wire.wake()

    def close(self) -> None:
        wire = self._wire
        if wire.closed:
            return
        try:
            wire.send(f.method_frame(0, f.CLOSE, struct.pack(">H", 200) + f.shortstr(
                "Normal shutdown") + b"\0\0\0\0"))
            for _ in range(20):  # the broker's CloseOk, briefly
                wire.wait(0.05)
                self._parse()
                if self._replies.pop(0, (0, b""))[0] == f.CLOSE_OK or wire.closed:
                    break
        except Exception:  # closing a broken connection: nothing more to do
            log.debug("broker close failed", exc_info=True)
        finally:
            wire.close()


def connect(settings: Settings, name: str = "droplet", confirms: bool = True
            ) -> AmqpConnection:
    return AmqpConnection(settings, name, confirms)
