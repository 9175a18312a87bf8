"""Encoding and decoding of broker message bodies: a signed frame around an Envelope."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError

from droplet.errors import DropletError
from droplet.proto import pb
from droplet.signing import Signer

MAX_ENVELOPE_MESSAGES = 256
# Well under RabbitMQ's max_message_size (128 MiB by default; often set lower).
MAX_ENVELOPE_BYTES = 8 * 1024 * 1024
# What a message adds to the value it is checked by, at most (its other fields, the envelope,
# a signature): whatever a party publishes is refused before it is sent when the value leaves
# less than this under max_message_bytes, since RabbitMQ refuses a message over its
# max_message_size by closing the publisher's channel. A DAG call's schedule travels in
# every trigger of the call, beside a step's result: twice the room.
MESSAGE_ROOM_BYTES = 1024
SCHEDULE_ROOM_BYTES = 2 * MESSAGE_ROOM_BYTES
T = TypeVar("T")


class MalformedMessageError(DropletError):
    """A body that is not a Droplet envelope; such messages are dead-lettered."""

    code = pb.INVALID_REQUEST


def encode(messages: Iterable[pb.Message], signer: Signer, nonce: str = "") -> bytes:
    """A signed body. `nonce` (admin requests) is the request id the answer is kept under;
    the issue time lets receivers refuse a captured request replayed much later."""
    envelope = pb.Envelope(nonce=nonce)
    if nonce:
        envelope.issued_at_ms = int(time.time() * 1000)
    envelope.messages.extend(messages)
    return signer.seal(envelope.SerializeToString())


def batches(messages: Iterable[pb.Message]) -> bool:
    """Whether a call or DAG step of a batching function is among the messages, as its sender
    knows it (the registration's or the DAG's `batching`), so the body is marked for its worker."""
    for message in messages:
        kind = message.WhichOneof("kind")
        if kind == "call" and message.call.batching:
            return True
        if kind == "trigger" and message.trigger.HasField("schedule") and (
                message.trigger.target_function in message.trigger.schedule.dag.batching_functions):
            return True
    return False


def encode_unsigned(messages: Iterable[pb.Message]) -> bytes:
    """A body deliberately left unsigned (refusals of messages that failed verification)."""
    return encode(messages, Signer(None))


def decode_envelope(body: bytes, signer: Signer) -> pb.Envelope:
    """Raises SignatureError or MalformedMessageError; never returns a partial envelope."""
    payload = signer.open(body)
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError:
        raise MalformedMessageError("body is not a Droplet envelope") from None
    if not envelope.messages:
        raise MalformedMessageError("empty envelope")
    return envelope


def decode(body: bytes, signer: Signer) -> list[pb.Message]:
    return list(decode_envelope(body, signer).messages)


def peek(body: bytes) -> list[pb.Message]:
    """The messages of a body that failed verification, parsed but NOT trusted: only to
    address the refusal to whoever waits for an answer. Nothing in them is unpickled."""
    for payload in (body[1:], body[33:]):  # an unsigned frame, or a signed one
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(payload)
        except DecodeError:
            continue
        if envelope.messages:
            return list(envelope.messages)
    return []


def packed(items: list[T], most: int, size_of: Callable[[T], int],
           most_bytes: int = MAX_ENVELOPE_BYTES) -> list[list[T]]:
    """Items in order, in envelopes of at most `most` items and about `most_bytes` (an item
    larger than that alone): a burst of large calls never makes one message the broker
    refuses (RabbitMQ's max_message_size)."""
    chunks: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        cost = size_of(item)
        if current and (len(current) >= most or total + cost > most_bytes):
            chunks.append(current)
            current, total = [], 0
        current.append(item)
        total += cost
    if current:
        chunks.append(current)
    return chunks
