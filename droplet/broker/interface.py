"""The broker as Droplet's services see it: a connection that publishes, consumes and acks.

`AmqpConnection` (broker/amqp*.py, Droplet's own AMQP client, the default), `RabbitConnection`
(broker/rabbitmq*.py, the only modules importing pika, settings.broker_transport = "pika") and
`StubConnection` (broker/stub.py, in memory) implement `BrokerConnection`. A connection is used
by one thread; other threads hand it work through `call_soon_threadsafe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

ConfirmCallback = Callable[[bool], None]


@dataclass(slots=True)
class Delivery:
    queue: str
    body: bytes
    tag: int
    reply_to: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False
    headers: Mapping[str, Any] | None = None
    claim: str = ""  # set once acked early and held as a claim in etcd (a long call)
    priority: int = 0  # the AMQP priority it was published with


@dataclass(frozen=True)
class QueueSpec:
    """A queue to declare; declaring the same spec again is a no-op."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: str = "direct"
    durable: bool = True


@dataclass(frozen=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    exchanges: Sequence[ExchangeSpec] = ()
    queues: Sequence[QueueSpec] = ()
    bindings: Sequence[BindingSpec] = ()


class BrokerConnection(Protocol):
    @property
    def is_open(self) -> bool: ...

    def declare(self, topology: Topology) -> None: ...

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
        """Sends without waiting; `priority` orders it in a queue declared with
        x-max-priority (higher first). `on_confirm(ok)` runs inside a later poll() once the broker
        has the message (ok=False: nacked, or unroutable when `mandatory`).

        `needs_confirm=False`: a persistent message whose sender sends it again itself until it
        is answered (a client's request) goes without a publisher confirm, on the channel
        that has none. Each confirm of a persistent message cost RabbitMQ some 0.2 ms of CPU
        (measured: half its system time per call) and the client a wake-up while it waits."""
        ...

    def consume(self, queue: str, *, prefetch: int, exclusive: bool = False) -> None: ...

    def pause(self, queue: str) -> None:
        """Stops consuming queue; returns once the broker confirmed it, so every delivery it
        sent before has arrived (for the next poll) and none comes after."""
        ...

    def resume(self, queue: str) -> None:
        """Consumes a paused queue again, with the same prefetch."""
        ...

    def consuming(self, queue: str) -> bool: ...

    def consume_replies(self) -> str:
        """Starts consuming this connection's direct-reply address; returns its name."""
        ...

    def poll(self, timeout_s: float) -> list[Delivery]:
        """Pumps I/O up to timeout_s; returns the deliveries that arrived (maybe none)."""
        ...

    def pump(self) -> None:
        """Services the connection once without waiting (heartbeats, confirms); deliveries
        that arrive stay buffered for the next poll()."""
        ...

    def ack(self, tag: int, multiple: bool = False) -> None: ...

    def reject(self, tag: int, requeue: bool) -> None: ...

    def written_together(self) -> AbstractContextManager[None]:
        """Within it, publishes and acks are queued and written to the broker at its end, in
        one go (a delivery's answers and its ack: one write instead of one each)."""
        ...

    def get(self, queue: str) -> Delivery | None:
        """Takes one message without a consumer (manual ack), or None when empty."""
        ...

    def queue_depth(self, queue: str) -> int | None:
        """Messages ready in a queue, None when the queue does not exist."""
        ...

    def queue_info(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue, None when it does not exist."""
        ...

    def delete_queue(self, queue: str, if_empty: bool = False) -> bool:
        """Deletes a queue (and what waits in it); with if_empty only an empty and unused one:
        False when the broker refused because a message waits there or a consumer is on it
        (its unacked deliveries are not counted as waiting). Quorum queues implement neither
        check: RabbitMQ closes the connection (540) of such a delete of one."""
        ...

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


ConnectionFactory = Callable[[], BrokerConnection]
