"""The lean transport's codec (droplet/broker/amqp_frames.py) and its frame reader
(droplet/broker/amqp_reader.py) without a broker: field tables round-trip, large bodies are
split at frame_max, and deliveries split across arbitrary reads (byte by byte) come out whole."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from droplet.broker import amqp_frames as f
from droplet.broker.amqp_reader import AmqpReader
from droplet.broker.confirms import PublisherConfirms


def test_field_tables_round_trip_with_nesting() -> None:
    table: dict[str, Any] = {
        "s": "héllo", "x": b"\x00\xffraw", "t": True, "f": False, "i": -5, "big": 1 << 40,
        "neg": -(1 << 40), "d": 2.5, "dec": Decimal("12.345"), "ts": datetime(
            2024, 5, 1, 12, 0, tzinfo=UTC), "none": None,
        "nested": {"a": [1, "two", {"three": [3.0, None, b"b"]}], "empty": {}, "list": []},
    }
    encoded = f.encode_table(table)
    decoded, end = f.decode_table(encoded, 0)
    assert end == len(encoded)
    assert decoded == table


@pytest.mark.parametrize(("letter", "raw", "value"), [
    (b"b", b"\xff", -1), (b"B", b"\xff", 255), (b"s", b"\xff\xfe", -2), (b"u", b"\xff\xfe", 65534),
    (b"I", b"\xff\xff\xff\xff", -1), (b"i", b"\xff\xff\xff\xff", 4294967295),
    (b"l", b"\xff" * 8, -1), (b"f", b"\x3f\xc0\x00\x00", 1.5),
])
def test_rabbitmqs_numeric_type_letters_decode(letter: bytes, raw: bytes, value: Any) -> None:
    payload = f.shortstr("k") + letter + raw
    table, _ = f.decode_table(len(payload).to_bytes(4, "big") + payload, 0)
    assert table == {"k": value}


def test_a_large_body_is_split_at_frame_max() -> None:
    body = bytes(range(256)) * 100  # 25600 bytes
    frames = f.content_frames(1, b"\x01", f.P_DELIVERY_MODE, body, frame_max=4096)
    assert all(len(frame) <= 4096 for frame in frames)
    pieces = [frame[7:-1] for frame in frames[1:]]
    assert all(frame[0] == f.FRAME_BODY and frame[-1] == f.FRAME_END for frame in frames[1:])
    assert b"".join(pieces) == body
    assert len(f.content_frames(1, b"\x01", f.P_DELIVERY_MODE, b"x", 4096)) == 1


class _FakeWire:
    heartbeat = 0
    closed = False

    def __init__(self) -> None:
        self.rbuf = bytearray()
        self.out: list[bytes] = []


def _delivery_bytes(tag: int, body: bytes, frame_max: int, **props: Any) -> bytes:
    ch = 1
    method = f.method_frame(ch, f.DELIVER, f.shortstr("ctag1.1") + tag.to_bytes(8, "big")
                            + b"\x01" + f.shortstr("") + f.shortstr("q"))
    flags, encoded = f.encode_properties(2, props.get("reply_to"), props.get("correlation_id"),
                                         props.get("headers"), props.get("message_id"),
                                         props.get("priority", 0))
    return method + b"".join(f.content_frames(ch, encoded, flags, body, frame_max))


def test_deliveries_split_across_reads_byte_by_byte_come_out_whole() -> None:
    wire: Any = _FakeWire()
    reader = AmqpReader(wire, PublisherConfirms(lambda fn: None))
    reader._consumers["ctag1.1"] = "work"
    bodies = [b"", b"small", bytes(range(256)) * 40]
    stream = f.HEARTBEAT + b"".join(
        _delivery_bytes(i + 1, body, 1000, reply_to="r", correlation_id=f"c{i}",
                        headers={"n": i, "deep": {"l": [i, "x"]}}, priority=i)
        for i, body in enumerate(bodies))
    for byte in stream:
        wire.rbuf.append(byte)
        reader._parse()
    got = reader._inbox
    assert [d.body for d in got] == bodies
    assert [(d.queue, d.tag, d.redelivered, d.reply_to, d.correlation_id, d.priority)
            for d in got] == [("work", i + 1, True, "r", f"c{i}", i) for i in range(3)]
    assert [d.headers for d in got] == [{"n": i, "deep": {"l": [i, "x"]}} for i in range(3)]
    assert not wire.rbuf


def test_confirms_with_multiple_are_recorded_not_run_while_parsing() -> None:
    wire: Any = _FakeWire()
    scheduled: list[Any] = []
    confirms = PublisherConfirms(scheduled.append)
    reader = AmqpReader(wire, confirms)
    reader._confirm_channel = 1
    seen: list[tuple[int, bool]] = []
    for i in range(1, 5):
        confirms.expect(lambda ok, i=i: seen.append((i, ok)))
    wire.rbuf += f.method_frame(1, f.ACK, (2).to_bytes(8, "big") + b"\x01")
    wire.rbuf += f.method_frame(1, f.NACK, (3).to_bytes(8, "big") + b"\x00")
    reader._parse()
    assert seen == [] and scheduled, "callbacks wait for the next poll"
    scheduled[-1]()
    assert seen == [(1, True), (2, True), (3, False)]


def test_the_transport_setting_picks_the_client() -> None:
    from droplet.broker.amqp import AmqpConnection
    from droplet.broker.rabbitmq import RabbitConnection
    from droplet.errors import ConfigurationError
    from droplet.runtime import broker_transport
    from droplet.settings import Settings

    assert broker_transport(Settings()) is AmqpConnection, "the lean client by default"
    fallback = Settings.from_env({"DROPLET_BROKER_TRANSPORT": "pika"})
    assert broker_transport(fallback) is RabbitConnection
    with pytest.raises(ConfigurationError, match="broker_transport"):
        Settings(broker_transport="kombu")
