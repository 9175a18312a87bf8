"""Bodies at the frame boundaries (0 and 1 byte, frame_max - 8 and one more, several frames
and one byte more) and headers of every field type a Droplet service may carry, published
and consumed through RabbitMQ by each transport and across them (one publishes, the other
reads; no floats: pika has none): each arrives whole, once, with its headers as sent. Held
when written (no bug found): kept as the edge cases' guard."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.settings import Settings
from tests.broker_transports import TRANSPORTS, connect, drain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

HEADERS: dict[str, Any] = {
    "nested": {"a": {"b": [1, "two", {"c": True}]}, "empty": {}},
    "array": [1, -1, 2**40, -(2**40), "s", b"\x00\xff", False, None, [], {"k": 1}],
    "bytes": b"\x00\x01\xfe\xff",
    "bools": [True, False],
    "big": 2**63 - 1,
    "small": -(2**63),
    "i32": 2**31 - 1,
    "i32-": -(2**31),
    "i32+1": 2**31,
    "ключ-ü-键": "ünïcødé ✓",
    "decimal": Decimal("12.345"),
    "when": datetime(2026, 11, 28, 18, 0, 0, tzinfo=UTC),
    "none": None,
    "empty-string": "",
}


def _sizes(frame_max: int) -> list[int]:
    room = frame_max - 8
    return [0, 1, room - 1, room, room + 1, 2 * room, 2 * room + 1, 3 * room + 7]



@pytest.mark.parametrize("publisher", TRANSPORTS)
@pytest.mark.parametrize("consumer", TRANSPORTS)
def test_bodies_and_headers_at_the_edges(settings: Settings, publisher: str,
                                         consumer: str) -> None:
    pub = connect(publisher, settings, "attack-edges-pub")
    sub = connect(consumer, settings, "attack-edges-sub")
    queue = f"attack-edges-{uuid.uuid4().hex[:8]}"
    try:
        sub.declare(Topology(queues=[QueueSpec(queue)]))
        frame_max = 131072
        if publisher == "amqp":
            frame_max = pub._wire.frame_max
        sizes = _sizes(frame_max)
        confirmed: list[bool] = []
        for i, size in enumerate(sizes):
            body = bytes((i + j) % 251 for j in range(size))
            pub.publish(queue, body, headers={**HEADERS, "n": i}, correlation_id=f"c{i}",
                        on_confirm=confirmed.append, persistent=i % 2 == 0)
        for _ in range(200):
            pub.poll(0.02)
            if len(confirmed) == len(sizes):
                break
        assert confirmed == [True] * len(sizes)
        sub.consume(queue, prefetch=100)
        got = drain(sub, len(sizes), rounds=200)
        # Persistent and transient messages go on two channels, between which the broker
        # keeps no order: the bodies are checked by their index (the correlation id).
        got.sort(key=lambda d: int((d.correlation_id or "c-1")[1:]))
        assert [len(d.body) for d in got] == sizes
        for i, d in enumerate(got):
            assert d.body == bytes((i + j) % 251 for j in range(sizes[i]))
            assert d.correlation_id == f"c{i}"
            headers = dict(d.headers or {})
            assert headers.pop("n") == i
            for key, value in HEADERS.items():
                seen = headers.get(key)
                if isinstance(value, bytes) and isinstance(seen, str):
                    seen = seen.encode()  # pika reads bytes back as a str when it can
                assert seen == value, (key, seen, value)
            sub.ack(d.tag)
        assert sub.poll(0.2) == []
    finally:
        try:
            sub.delete_queue(queue)
        finally:
            sub.close()
            pub.close()
