"""Encoding and decoding of broker message bodies: a signed frame around an Envelope."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError

from droplet.errors import DropletError
from droplet.proto import pb
from droplet.signing import Signer


class MalformedMessageError(DropletError):
    """A body that is not a Droplet envelope; such messages are dead-lettered."""

    code = pb.INVALID_REQUEST


def encode(messages: Iterable[pb.Message], signer: Signer) -> bytes:
    envelope = pb.Envelope()
    envelope.messages.extend(messages)
    return signer.seal(envelope.SerializeToString())


def decode(body: bytes, signer: Signer) -> list[pb.Message]:
    """Raises SignatureError or MalformedMessageError; never returns a partial envelope."""
    payload = signer.open(body)
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError:
        raise MalformedMessageError("body is not a Droplet envelope") from None
    if not envelope.messages:
        raise MalformedMessageError("empty envelope")
    return list(envelope.messages)


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
