"""AMQP 0-9-1 encoding and decoding for the lean transport (broker/amqp.py), as plain bytes.

Why not objects: a message hop on a worker is a delivery in and a publish plus an ack out, and
with a general client each frame becomes a method object, a properties object and a few
callbacks. Here a publish is encoded into one bytes with pre-built prefixes and `struct`, and
the reader (broker/amqp.py) unpacks fields straight from its read buffer with `unpack_from`.
Only what is rarely on the hot path (field tables, the handshake, RPC replies) goes through the
general helpers below.

Field-table type letters are RabbitMQ's (which differ from the 0-9-1 spec's errata for a few
short types): t bool, b/B signed/unsigned 8 bit, s/u signed/unsigned 16 bit, I/i signed/
unsigned 32 bit, l/L 64 bit, f/d float/double, D decimal, T timestamp, S long string, x bytes,
F table, A array, V void.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
_METHOD_HEAD = struct.Struct(">BHIHH")  # frame head + class id, method id
_CONTENT_HEAD = struct.Struct(">BHIHHQH")  # frame head + class, weight, body size, flags
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_END = b"\xce"


def mid(class_id: int, method_id: int) -> int:
    """A method's class and id as one int, as the reader unpacks them (">I")."""
    return class_id << 16 | method_id


# Method ids the transport sends or expects.
START, START_OK, TUNE, TUNE_OK = mid(10, 10), mid(10, 11), mid(10, 30), mid(10, 31)
OPEN, OPEN_OK, CLOSE, CLOSE_OK = mid(10, 40), mid(10, 41), mid(10, 50), mid(10, 51)
BLOCKED, UNBLOCKED = mid(10, 60), mid(10, 61)
CH_OPEN, CH_OPEN_OK, CH_CLOSE, CH_CLOSE_OK = mid(20, 10), mid(20, 11), mid(20, 40), mid(20, 41)
EXCHANGE_DECLARE, EXCHANGE_DECLARE_OK = mid(40, 10), mid(40, 11)
QUEUE_DECLARE, QUEUE_DECLARE_OK = mid(50, 10), mid(50, 11)
QUEUE_BIND, QUEUE_BIND_OK = mid(50, 20), mid(50, 21)
QUEUE_DELETE, QUEUE_DELETE_OK = mid(50, 40), mid(50, 41)
QOS, QOS_OK, CONSUME, CONSUME_OK = mid(60, 10), mid(60, 11), mid(60, 20), mid(60, 21)
CANCEL, CANCEL_OK, PUBLISH, RETURN = mid(60, 30), mid(60, 31), mid(60, 40), mid(60, 50)
DELIVER, GET, GET_OK, GET_EMPTY = mid(60, 60), mid(60, 70), mid(60, 71), mid(60, 72)
ACK, REJECT, NACK = mid(60, 80), mid(60, 90), mid(60, 120)
SELECT, SELECT_OK = mid(85, 10), mid(85, 11)

# Basic properties: the flag bit of each, highest first (0-9-1 spec, class basic).
P_CONTENT_TYPE, P_CONTENT_ENCODING, P_HEADERS, P_DELIVERY_MODE = 0x8000, 0x4000, 0x2000, 0x1000
P_PRIORITY, P_CORRELATION_ID, P_REPLY_TO, P_EXPIRATION = 0x0800, 0x0400, 0x0200, 0x0100
P_MESSAGE_ID, P_TIMESTAMP, P_TYPE, P_USER_ID, P_APP_ID = 0x80, 0x40, 0x20, 0x10, 0x08


class ProtocolError(Exception):
    """The peer sent bytes that are not AMQP 0-9-1 as this codec knows it."""


def shortstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {raw[:40]!r}...")
    return bytes((len(raw),)) + raw


def longstr(raw: bytes) -> bytes:
    return _U32.pack(len(raw)) + raw


def method_frame(channel: int, method: int, args: bytes = b"") -> bytes:
    return (FRAME_HEAD.pack(FRAME_METHOD, channel, 4 + len(args)) + _U32.pack(method) + args
            + _END)


def publish_prefix(channel: int, routing_key: str, mandatory: bool) -> bytes:
    """The method frame of a basic.publish to the default exchange (cached by the caller)."""
    args = b"\x00\x00" + shortstr("") + shortstr(routing_key) + (b"\x01" if mandatory
                                                                  else b"\x00")
    return method_frame(channel, PUBLISH, args)


def content_frames(channel: int, props: bytes, flags: int, body: bytes, frame_max: int
                   ) -> list[bytes]:
    """The header frame and the body frames (each within frame_max) of one message; for a
    body that fits in one frame, a single bytes holding both."""
    header_payload = _CONTENT_HEAD.pack(0, 0, 0, 60, 0, len(body), flags)[7:] + props
    header = FRAME_HEAD.pack(FRAME_HEADER, channel, len(header_payload)) + header_payload + _END
    room = frame_max - 8
    if len(body) <= room:
        if not body:
            return [header]
        return [header + FRAME_HEAD.pack(FRAME_BODY, channel, len(body)) + body + _END]
    frames = [header]
    view = memoryview(body)
    for start in range(0, len(body), room):
        piece = view[start:start + room]
        frames.append(b"".join((FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)), piece, _END)))
    return frames


def encode_properties(delivery_mode: int, reply_to: str | None, correlation_id: str | None,
                      headers: Mapping[str, Any] | None, message_id: str | None,
                      priority: int) -> tuple[int, bytes]:
    """(flags, encoded properties) of a publish, in the spec's order of the flag bits."""
    flags = P_DELIVERY_MODE
    parts = []
    if headers:
        flags |= P_HEADERS
        parts.append(encode_table(headers))
    parts.append(bytes((delivery_mode,)))
    if priority:
        flags |= P_PRIORITY
        parts.append(bytes((priority,)))
    if correlation_id is not None:
        flags |= P_CORRELATION_ID
        parts.append(shortstr(correlation_id))
    if reply_to is not None:
        flags |= P_REPLY_TO
        parts.append(shortstr(reply_to))
    if message_id is not None:
        flags |= P_MESSAGE_ID
        parts.append(shortstr(message_id))
    return flags, b"".join(parts)


# -- field tables -----------------------------------------------------------------------------

def encode_table(table: Mapping[str, Any]) -> bytes:
    parts = []
    for key, value in table.items():
        parts.append(shortstr(key))
        parts.append(encode_value(value))
    payload = b"".join(parts)
    return _U32.pack(len(payload)) + payload


def encode_value(value: Any) -> bytes:
    """One field value with its type letter; Python types map as RabbitMQ's clients do."""
    if isinstance(value, str):
        raw = value.encode()
        return b"S" + _U32.pack(len(raw)) + raw
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return b"x" + _U32.pack(len(raw)) + raw
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return b"I" + struct.pack(">i", value)
        return b"l" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, Decimal):
        _sign, _digits, exponent = value.as_tuple()
        places = -int(exponent) if isinstance(exponent, int) and exponent < 0 else 0
        unscaled = int(value.scaleb(places))
        return b"D" + struct.pack(">Bi", places, unscaled)
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return b"T" + _U64.pack(int(stamp.timestamp()))
    if isinstance(value, Mapping):
        return b"F" + encode_table(value)
    if isinstance(value, (list, tuple)):
        payload = b"".join(encode_value(item) for item in value)
        return b"A" + _U32.pack(len(payload)) + payload
    if value is None:
        return b"V"
    raise TypeError(f"no AMQP field type for {type(value).__name__}: {value!r}")


def decode_table(buf: bytes | bytearray | memoryview, offset: int) -> tuple[dict[str, Any], int]:
    """(table, offset after it) of the field table at offset."""
    (size,) = _U32.unpack_from(buf, offset)
    offset += 4
    end = offset + size
    table: dict[str, Any] = {}
    while offset < end:
        key, offset = decode_shortstr(buf, offset)
        table[key], offset = decode_value(buf, offset)
    if offset != end:
        raise ProtocolError("field table overruns its size")
    return table, end


def decode_shortstr(buf: bytes | bytearray | memoryview, offset: int) -> tuple[str, int]:
    size = buf[offset]
    end = offset + 1 + size
    return bytes(buf[offset + 1:end]).decode("utf-8", "surrogateescape"), end


def decode_longstr(buf: bytes | bytearray | memoryview, offset: int) -> tuple[bytes, int]:
    (size,) = _U32.unpack_from(buf, offset)
    return bytes(buf[offset + 4:offset + 4 + size]), offset + 4 + size


_FIXED = {b"b": struct.Struct(">b"), b"B": _U8, b"s": struct.Struct(">h"),
          b"U": struct.Struct(">h"), b"u": _U16, b"I": struct.Struct(">i"), b"i": _U32,
          b"l": struct.Struct(">q"), b"L": struct.Struct(">q"), b"f": struct.Struct(">f"),
          b"d": struct.Struct(">d")}


def decode_value(buf: bytes | bytearray | memoryview, offset: int) -> tuple[Any, int]:
    kind = bytes(buf[offset:offset + 1])
    offset += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed.unpack_from(buf, offset)[0], offset + fixed.size
    if kind == b"S":
        raw, offset = decode_longstr(buf, offset)
        try:
            return raw.decode(), offset
        except UnicodeDecodeError:
            return raw, offset
    if kind == b"x":
        return decode_longstr(buf, offset)
    if kind == b"t":
        return bool(buf[offset]), offset + 1
    if kind == b"F":
        return decode_table(buf, offset)
    if kind == b"A":
        (size,) = _U32.unpack_from(buf, offset)
        offset += 4
        end = offset + size
        items = []
        while offset < end:
            item, offset = decode_value(buf, offset)
            items.append(item)
        return items, end
    if kind == b"T":
        (stamp,) = _U64.unpack_from(buf, offset)
        return datetime.fromtimestamp(stamp, UTC), offset + 8
    if kind == b"D":
        places, unscaled = struct.unpack_from(">Bi", buf, offset)
        return Decimal(unscaled).scaleb(-places), offset + 5
    if kind == b"V":
        return None, offset
    raise ProtocolError(f"unknown AMQP field type {kind!r}")


def decode_properties(buf: bytes | bytearray, offset: int, flags: int
                      ) -> tuple[dict[str, Any] | None, int, str | None, str | None,
                                 str | None]:
    """(headers, priority, correlation_id, reply_to, message_id) of a content header's
    properties (the others are skipped: nothing here reads them; they come after
    message_id but for the first two). Ids that are not UTF-8 come through with U+FFFD for
    what is not (protobuf's string fields and the publish take them then), a reply-to that is
    not as None: a strict decode failed every poll of the connection, which could never
    consume past such a message (tests/attack/test_non_utf8_properties.py)."""
    headers = correlation_id = reply_to = message_id = None
    priority = 0
    if flags & P_CONTENT_TYPE:
        offset += 1 + buf[offset]
    if flags & P_CONTENT_ENCODING:
        offset += 1 + buf[offset]
    if flags & P_HEADERS:
        try:
            headers, offset = decode_table(buf, offset)
        except (ValueError, OverflowError, OSError, RecursionError, ProtocolError):
            # What RabbitMQ passed on but Python cannot hold (a timestamp past datetime's
            # range, nesting past the recursion limit): skipped by its size, or every poll
            # would fail on it for ever (tests/attack/test_undecodable_header_table.py).
            headers = {}
            offset += 4 + _U32.unpack_from(buf, offset)[0]
    if flags & P_DELIVERY_MODE:
        offset += 1
    if flags & P_PRIORITY:
        priority = buf[offset]
        offset += 1
    if flags & P_CORRELATION_ID:
        end = offset + 1 + buf[offset]
        correlation_id = buf[offset + 1:end].decode("utf-8", "replace")
        offset = end
    if flags & P_REPLY_TO:
        end = offset + 1 + buf[offset]
        try:  # an address RabbitMQ cannot route to either (a reply to it would make the
            reply_to = buf[offset + 1:end].decode()  # broker close the connection: 541)
        except UnicodeDecodeError:
            reply_to = None  # no answer can reach it
        offset = end
    if flags & P_EXPIRATION:
        offset += 1 + buf[offset]
    if flags & P_MESSAGE_ID:
        end = offset + 1 + buf[offset]
        message_id = buf[offset + 1:end].decode("utf-8", "replace")
    return headers, priority, correlation_id, reply_to, message_id


def bits(*flags: bool) -> bytes:
    """Consecutive bit fields packed into one octet, the first in the lowest bit."""
    return bytes((sum(1 << i for i, flag in enumerate(flags) if flag),))
