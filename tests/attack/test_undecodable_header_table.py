"""A message whose headers RabbitMQ passes on but the lean codec could not turn into Python
values (a timestamp past what datetime holds, arrays nested deeper than Python recursion)
must still be consumed. It raised OverflowError / RecursionError (no BrokerError) out of
consume() and every poll: the owner reconnected, the message came back, and so on for ever;
one such message on the shared queue stopped every worker (the poison counter never saw
it). Such a table is now skipped by its size (headers {}), the message arrives."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest

from droplet.broker import amqp_frames as f
from droplet.broker.interface import QueueSpec, Topology
from droplet.settings import Settings
from tests.broker_transports import connect, drain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _deep_array(levels: int) -> bytes:
    value = b"V"
    for _ in range(levels):
        value = b"A" + struct.pack(">I", len(value)) + value
    return value


TABLES = {
    "timestamp-overflow": f.shortstr("when") + b"T" + b"\xff" * 8,
    "deep-nesting": f.shortstr("deep") + _deep_array(5000),
}


def _publish_raw(conn: Any, queue: str, table_payload: bytes, body: bytes) -> None:
    """A publish with a hand-made headers table (the codec would not encode these)."""
    props = struct.pack(">I", len(table_payload)) + table_payload + b"\x02"
    wire = conn._wire
    wire.out.append(f.publish_prefix(conn._fast, queue, False))
    wire.out.extend(f.content_frames(conn._fast, props, f.P_HEADERS | f.P_DELIVERY_MODE, body,
                                     wire.frame_max))
    wire.flush()



@pytest.mark.parametrize("table", sorted(TABLES))
def test_undecodable_header_table(settings: Settings, table: str) -> None:
    pub = connect("amqp", settings, "attack-table-pub")
    sub = connect("amqp", settings, "attack-table-sub")
    queue = f"attack-table-{uuid.uuid4().hex[:8]}"
    try:
        sub.declare(Topology(queues=[QueueSpec(queue)]))
        pub.publish(queue, b"before")
        _publish_raw(pub, queue, TABLES[table], b"hostile")
        pub.publish(queue, b"after", headers={"n": 1})
        confirmed: list[bool] = []
        pub.publish(queue, b"last", on_confirm=confirmed.append)
        for _ in range(100):
            pub.poll(0.02)
            if confirmed:
                break
        assert confirmed == [True] and pub.is_open
        sub.consume(queue, prefetch=10)
        got = drain(sub, 4, rounds=60)
        by_body = {d.body: d for d in got}  # (the raw publish went on the other channel)
        assert sorted(by_body) == [b"after", b"before", b"hostile", b"last"] and len(got) == 4
        assert by_body[b"hostile"].headers == {} and by_body[b"after"].headers == {"n": 1}
        for d in got:
            sub.ack(d.tag)
    finally:
        try:
            sub.delete_queue(queue)
        finally:
            sub.close()
            pub.close()
