"""RabbitMQ behind `BrokerConnection`: the only module that imports pika.

One pika BlockingConnection with two channels. Durable messages go on a channel in confirm mode,
with asynchronous confirms: `publish` returns at once and the caller's `on_confirm` runs (inside
a later `poll`) when the broker has taken responsibility for the message. Services ack an
inbound message only from that callback, so a forward is never lost and the message flow never
waits for a confirm. Transient messages (replies to clients) go on a second channel without
confirms: a reply is only a fast path, what must last is in the store, and a confirm per reply
would cost the broker and the worker a frame for nothing.

Every pika exception leaves as a `BrokerError`, after which the
connection is dropped and the owning service reconnects, re-declares and resumes; unacked
deliveries are requeued by the broker meanwhile, which makes delivery at-least-once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from droplet.broker.interface import ConfirmCallback, Delivery, Topology
from droplet.errors import (
    BrokerCredentialsError,
    BrokerError,
    BrokerTlsError,
    ConfigurationError,
    QueueArgumentsError,
)
from droplet.settings import Settings
from droplet.tls import broker_peer, client_context, explain_failure

log = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_PERSISTENT = 2
_TRANSIENT = 1
_PRECONDITION_FAILED = 406


def connection_parameters(settings: Settings, name: str) -> pika.URLParameters:
    try:
        params = pika.URLParameters(settings.broker_url)
    except Exception as exc:
        raise BrokerError(f"bad broker URL: {exc}") from None
    params.heartbeat = settings.broker_heartbeat_s
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": name}
    if settings.broker_url.startswith("amqps://"):
        try:
            context = client_context(
                "broker_ca_file", settings.broker_ca_file, "broker_cert_file",
                settings.broker_cert_file, "broker_key_file", settings.broker_key_file)
        except ConfigurationError as exc:
            raise BrokerTlsError(str(exc)) from None
        params.ssl_options = pika.SSLOptions(context, params.host)
    return params


def _connect_error(settings: Settings, params: pika.URLParameters, exc: BaseException
                   ) -> BrokerError:
    """The error a failed connect leaves as: a refused user or a TLS mismatch say so, with
    the setting to change; anything else (a port that refuses, a broker down) is a plain
    BrokerError the caller may retry."""
    detail = f"{type(exc).__name__}: {str(exc) or repr(exc)}"
    address = f"{params.host}:{params.port}"
    if isinstance(exc, (pex.ProbableAuthenticationError, pex.ProbableAccessDeniedError)):
        return BrokerCredentialsError(
            f"RabbitMQ at {address} refused user {params.credentials.username!r} on virtual "
            f"host {params.virtual_host!r} ({detail}): check the user, password and virtual "
            "host in broker_url (DROPLET_BROKER_URL)")
    explained = explain_failure(detail, broker_peer(settings, address,
                                                    tls=params.ssl_options is not None))
    if explained is not None:
        return BrokerTlsError(f"{explained} [{detail}]")
    return BrokerError(f"RabbitMQ connect failed: {detail}")


@contextmanager
def _converted(action: str) -> Iterator[None]:
    try:
        yield
    except (pex.AMQPError, OSError, AssertionError) as exc:
        detail = str(exc) or repr(exc)
        raise BrokerError(f"RabbitMQ {action} failed: {type(exc).__name__}: {detail}") from None


class RabbitConnection:
    """`confirms=False` suits a client, which re-sends whatever is unanswered after a
    reconnect anyway: it saves the broker and itself a frame per message."""

    def __init__(self, settings: Settings, name: str = "droplet", confirms: bool = True) -> None:
        self._confirms = confirms
        self._inbox: list[Delivery] = []
        self._consumers: dict[str, str] = {}  # consumer tag -> queue
        self._by_queue: dict[str, tuple[str, int, bool]] = {}  # queue -> (tag, prefetch, excl)
        self._paused: dict[str, tuple[str, int, bool]] = {}
        self._cancelled: list[str] = []
        self._publish_seq = 0
        self._unconfirmed: dict[int, ConfirmCallback | None] = {}
        self._returned: set[int] = set()
        self._confirmed: list[tuple[ConfirmCallback, bool]] = []
        self._writing_later = False  # inside written_together(): queue frames, write at its end
        params = connection_parameters(settings, name)
        try:
            self._conn = pika.BlockingConnection(params)
        except (pex.AMQPError, OSError, AssertionError) as exc:
            raise _connect_error(settings, params, exc) from None
        with _converted("connect"):
            self._open_channel()
            self._fast: BlockingChannel = self._conn.channel() if confirms else self._channel

    def _open_channel(self) -> None:
        self._channel: BlockingChannel = self._conn.channel()
        self._channel.add_on_cancel_callback(self._on_cancelled)
        self._publish_seq = 0
        if not self._confirms:
            return
        impl = self._channel._impl
        selected: list[bool] = []
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        impl.add_on_return_callback(self._on_return)
        while not selected:
            self._conn.process_data_events(time_limit=0.005)

    @property
    def is_open(self) -> bool:
        return bool(self._conn.is_open and self._channel.is_open and self._fast.is_open)

    def declare(self, topology: Topology) -> None:
        try:
            self._declare(topology)
        except pex.ChannelClosedByBroker as exc:
            if exc.reply_code != _PRECONDITION_FAILED:
                raise BrokerError(f"RabbitMQ declare failed: {exc}") from None
            with _converted("reopen channel"):
                fast_is_main = self._fast is self._channel
                self._open_channel()
                if fast_is_main:
                    self._fast = self._channel
            raise QueueArgumentsError(
                f"RabbitMQ refused a queue's arguments ({exc.reply_text}): it was declared "
                "differently, by an older Droplet or with another max_priority. Stop the "
                "fleet and run `droplet migrate-queues` (messages are kept)") from None

    def _declare(self, topology: Topology) -> None:
        """Declares; a refused queue leaves as pika's ChannelClosedByBroker (see declare)."""
        try:
            for exchange in topology.exchanges:
                self._channel.exchange_declare(
                    exchange.name, exchange_type=exchange.kind, durable=exchange.durable
                )
            for queue in topology.queues:
                self._channel.queue_declare(
                    queue.name,
                    durable=queue.durable,
                    exclusive=queue.exclusive,
                    auto_delete=queue.auto_delete,
                    arguments=dict(queue.arguments) or None,
                )
            for binding in topology.bindings:
                self._channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
        except pex.ChannelClosedByBroker:
            raise
        except (pex.AMQPError, OSError, AssertionError) as exc:
            raise BrokerError(f"RabbitMQ declare failed: {type(exc).__name__}: {exc}") from None

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
    ) -> None:
        confirmed = self._confirms and (persistent or mandatory)
        if confirmed:
            self._publish_seq += 1
        seq = self._publish_seq
        props = pika.BasicProperties(
            delivery_mode=_PERSISTENT if persistent else _TRANSIENT,
            reply_to=reply_to,
            correlation_id=correlation_id,
            headers=dict(headers) if headers else None,
            message_id=str(seq) if mandatory and confirmed else None,
            priority=priority or None,
        )
        channel = self._channel if confirmed else self._fast
        if confirmed:
            self._unconfirmed[seq] = on_confirm
        with _converted(f"publish to {queue}"):
            if self._writing_later:
                channel._impl.basic_publish("", queue, body, properties=props,
                                            mandatory=mandatory)
            else:
                channel.basic_publish("", queue, body, properties=props, mandatory=mandatory)
        if not confirmed and on_confirm is not None:
            self._confirmed.append((on_confirm, True))
            self._conn.call_later(0, self._run_confirmed)

    def _on_cancelled(self, frame: Any) -> None:
        """The broker cancelled a consumer (its queue was deleted): make poll() fail so the
        owner reconnects and declares the queue again."""
        self._cancelled.append(self._consumers.get(frame.method.consumer_tag, "?"))

    def _on_message(
        self, _ch: Any, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        self._inbox.append(_delivery(self._consumers.get(method.consumer_tag, ""), method,
                                     props, body))

    def _on_return(self, _ch: Any, _method: Any, props: pika.BasicProperties, _body: bytes) -> None:
        if props.message_id and props.message_id.isdigit():
            self._returned.add(int(props.message_id))

    def _on_confirm(self, frame: Any) -> None:
        """Runs inside pika's I/O loop: only records; callbacks run from poll()."""
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tag = int(method.delivery_tag)
        seqs = [s for s in self._unconfirmed if s <= tag] if method.multiple else [tag]
        for seq in seqs:
            callback = self._unconfirmed.pop(seq, None)
            returned = seq in self._returned
            self._returned.discard(seq)
            if callback is not None:
                self._confirmed.append((callback, ok and not returned))
        if self._confirmed:
            self._conn.call_later(0, self._run_confirmed)

    def _run_confirmed(self) -> None:
        done, self._confirmed = self._confirmed, []
        for callback, ok in done:
            callback(ok)

    def consume(self, queue: str, *, prefetch: int, exclusive: bool = False) -> None:
        """Starts consuming queue with its own prefetch (per consumer)."""
        with _converted(f"consume {queue}"):
            self._channel.basic_qos(prefetch_count=prefetch)
            tag = self._channel.basic_consume(queue, self._on_message, exclusive=exclusive)
        self._consumers[tag] = queue
        self._by_queue[queue] = (tag, prefetch, exclusive)

    def pause(self, queue: str) -> None:
        """Stops the consumer of queue and waits until the broker confirms it: every delivery
        the broker sent before that has arrived (the next poll returns it) and none arrives
        after. (pika's own cancel would reject what crosses the cancel, and a rejected delivery
        comes back marked as redelivered, as after a crash: so the cancel goes through pika's
        channel implementation, which is told to keep delivering until the broker's CancelOk.)"""
        held = self._by_queue.pop(queue, None)
        if held is None:
            return
        tag = held[0]
        impl = self._channel._impl
        done: list[bool] = []
        if tag not in impl._consumers:  # already cancelled by the broker: nothing to wait for
            self._paused[queue] = held
            return
        with _converted(f"pause {queue}"):
            impl.basic_cancel(tag, callback=lambda _frame: done.append(True))
            impl._cancelled.discard(tag)
            while not done and not self._cancelled:
                self._conn.process_data_events(time_limit=0.005)
            self._conn.process_data_events(time_limit=0)  # hand over what crossed the cancel
            self._channel._consumer_infos.pop(tag, None)
        self._paused[queue] = held

    def resume(self, queue: str) -> None:
        """Consumes a paused queue again."""
        held = self._paused.pop(queue, None)
        if held is not None:
            self.consume(queue, prefetch=held[1], exclusive=held[2])

    def consuming(self, queue: str) -> bool:
        return queue in self._by_queue

    def consume_replies(self) -> str:
        with _converted("consume replies"):
            tag = self._channel.basic_consume(DIRECT_REPLY_TO, self._on_message, auto_ack=True)
        self._consumers[tag] = DIRECT_REPLY_TO
        return DIRECT_REPLY_TO

    def poll(self, timeout_s: float) -> list[Delivery]:
        with _converted("poll"):
            self._conn.process_data_events(time_limit=0 if self._inbox else timeout_s)
        if self._cancelled:
            raise BrokerError(f"the broker cancelled consuming {self._cancelled}")
        out, self._inbox = self._inbox, []
        return out

    def pump(self) -> None:
        with _converted("pump"):
            self._conn.process_data_events(time_limit=0)

    def ack(self, tag: int, multiple: bool = False) -> None:
        with _converted("ack"):
            if self._writing_later:
                self._channel._impl.basic_ack(delivery_tag=tag, multiple=multiple)
            else:
                self._channel.basic_ack(tag, multiple=multiple)

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
            with _converted("write"):
                self._conn._flush_output()

    def reject(self, tag: int, requeue: bool) -> None:
        with _converted("reject"):
            self._channel.basic_reject(tag, requeue=requeue)

    def get(self, queue: str) -> Delivery | None:
        with _converted(f"get from {queue}"):
            method, props, body = self._channel.basic_get(queue, auto_ack=False)
        return None if method is None else _delivery(queue, method, props, body)

    def queue_depth(self, queue: str) -> int | None:
        info = self.queue_info(queue)
        return None if info is None else info[0]

    def queue_info(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) by a passive declare. A missing queue closes the channel
        and a fresh one is opened, which drops this connection's consumers: use it on
        connections that only inspect."""
        try:
            frame = self._channel.queue_declare(queue, passive=True)
            return int(frame.method.message_count), int(frame.method.consumer_count)
        except pex.ChannelClosedByBroker:
            with _converted("reopen channel"):
                fast_is_main = self._fast is self._channel
                self._open_channel()
                if fast_is_main:
                    self._fast = self._channel
            return None
        except (pex.AMQPError, OSError) as exc:
            raise BrokerError(f"RabbitMQ queue depth failed: {exc}") from None

    def delete_queue(self, queue: str) -> None:
        with _converted(f"delete {queue}"):
            self._channel.queue_delete(queue)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        with _converted("schedule callback"):
            self._conn.add_callback_threadsafe(fn)

    def close(self) -> None:
        try:
            if self._conn.is_open:
                self._conn.close()
        except Exception:  # closing a broken connection: nothing more to do
            log.debug("broker close failed", exc_info=True)


def _delivery(queue: str, method: Any, props: pika.BasicProperties, body: bytes) -> Delivery:
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


def connect(settings: Settings, name: str = "droplet", confirms: bool = True) -> RabbitConnection:
    return RabbitConnection(settings, name, confirms)
