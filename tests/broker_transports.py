"""Both AMQP transports for tests that run against each (settings.broker_transport), and the
hooks into their sockets that those tests need (counting or squeezing the sends)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from droplet.broker import amqp, rabbitmq
from droplet.broker.interface import Delivery
from droplet.settings import Settings

TRANSPORTS = ("amqp", "pika")

transports = pytest.mark.parametrize("transport", TRANSPORTS)


def connect(transport: str, settings: Settings, name: str, confirms: bool = True) -> Any:
    if transport == "pika":
        return rabbitmq.connect(settings, name, confirms)
    return amqp.connect(settings, name, confirms)


def raw_socket(conn: Any) -> Any:
    if isinstance(conn, rabbitmq.RabbitConnection):
        return conn._conn._impl._transport._sock
    return conn._wire.sock


def on_send(conn: Any, hook: Callable[[Callable[[Any], int], Any], int]) -> None:
    """Routes every send of conn through hook(real_send, data)."""
    if isinstance(conn, rabbitmq.RabbitConnection):
        transport = conn._conn._impl._transport
        real = transport._sigint_safe_send
        transport._sigint_safe_send = lambda sock, data: hook(lambda d: real(sock, d), data)
    else:
        wire = conn._wire
        real_raw = wire._send_raw
        wire._send_raw = lambda data: hook(real_raw, data)


def drain(conn: Any, want: int, rounds: int = 100) -> list[Delivery]:
    """Polls conn until `want` deliveries arrived or `rounds` polls of 50 ms passed."""
    got: list[Delivery] = []
    for _ in range(rounds):
        got += conn.poll(0.05)
        if len(got) >= want:
            break
    return got


def confirms_numbered(conn: Any) -> int:
    """How many publishes conn has sent through its confirmed channel so far."""
    return int(conn._pending.seq)
