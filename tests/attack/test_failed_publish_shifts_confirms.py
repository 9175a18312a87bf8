"""A publish that fails while its properties are encoded (a header value with no AMQP type,
an int past 64 bits, a correlation id over 255 bytes) must not take a publisher-confirm
sequence number. It did: `expect` numbered it before encoding, nothing reached the broker,
and from then on every confirm went to the callback of the publish before it; a mandatory
publish's message id (its number) no longer matched the broker's, so an unroutable message
was confirmed True (a direct DAG trigger or a hand-back lost, no fallback) and a delivered
one False. Checked for both transports."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.settings import Settings
from tests.broker_transports import connect, transports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

BAD_PUBLISHES: list[dict[str, Any]] = [
    {"headers": {"obj": object()}},
    {"headers": {"big": 1 << 64}},
    {"headers": {"k" * 300: 1}},
    {"correlation_id": "c" * 300},
]


@transports
@pytest.mark.parametrize("bad", range(len(BAD_PUBLISHES)))
def test_failed_publish_shifts_confirms(settings: Settings, transport: str, bad: int) -> None:
    conn = connect(transport, settings, "attack-confirm-shift")
    queue = f"attack-shift-{uuid.uuid4().hex[:8]}"
    try:
        conn.declare(Topology(queues=[QueueSpec(queue, auto_delete=False)]))
        got: dict[str, bool] = {}
        with pytest.raises(Exception):  # noqa: B017 - whatever the encoder raises
            conn.publish(queue, b"bad", on_confirm=lambda ok: got.__setitem__("bad", ok),
                         **BAD_PUBLISHES[bad])
        if not conn.is_open:  # a transport may close on it: then a fresh one
            conn.close()
            conn = connect(transport, settings, "attack-confirm-shift")
        conn.publish(f"missing-{queue}", b"lost", mandatory=True,
                     on_confirm=lambda ok: got.__setitem__("unroutable", ok))
        conn.publish(queue, b"kept", mandatory=True,
                     on_confirm=lambda ok: got.__setitem__("routed", ok))
        for _ in range(200):
            conn.poll(0.02)
            if "routed" in got and "unroutable" in got:
                break
        assert got.get("unroutable") is False, got
        assert got.get("routed") is True, got
        assert "bad" not in got or got["bad"] is False, got
    finally:
        try:
            conn.delete_queue(queue)
        finally:
            conn.close()
