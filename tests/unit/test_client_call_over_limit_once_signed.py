"""What the client accepts must fit in one message once enveloped and signed.

The client checks a call's arguments (`call.arguments.ByteSize()`) and a DAG call
(`call.ByteSize()`) against max_message_bytes itself (client/checks.checked_size), with no
room for the rest of the message: the call's own fields, the envelope, the signature (33
bytes with a signing key). A call at the limit is accepted and its message is then over the
broker's max_message_size: RabbitMQ closes the client's channel, and the client re-sends it
after reconnecting (pump), again and again, never raising ValueTooLargeError.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from droplet.client.client import DropletClient
from droplet.client.dagcalls import build_dag_call
from droplet.client.sessions import SessionFloors
from droplet.errors import ValueTooLargeError
from droplet.proto import envelope, pb
from droplet.signing import Signer

from .inprocess import SETTINGS

LIMIT = 256 * 1024
SIGNER = Signer("k" * 32)


def _fake_client() -> SimpleNamespace:
    return SimpleNamespace(settings=replace(SETTINGS, max_message_bytes=LIMIT),
                           sessions=SessionFloors(lambda: 0), _request_id=0, _closed=False,
                           traces=SimpleNamespace(enabled=False))


def _largest_accepted(build: object) -> int:
    """The largest blob argument `build(size)` accepts (ValueTooLargeError above it)."""
    low, high = 0, LIMIT
    while low < high:
        mid = (low + high + 1) // 2
        try:
            build(mid)  # type: ignore[operator]
        except ValueTooLargeError:
            high = mid - 1
        else:
            low = mid
    return low


def test_a_dag_call_the_client_accepts_fits_in_one_signed_message() -> None:
    client = _fake_client()

    def build(size: int) -> pb.DagCall:
        return build_dag_call(client, "d", {"f": [b"a" * size]},  # type: ignore[arg-type]
                              False, pb.NORMAL, None, None)

    call = build(_largest_accepted(build))
    body = envelope.encode([pb.Message(dag_call=call)], SIGNER)
    assert len(body) <= LIMIT, f"accepted, then a message of {len(body)} bytes (limit {LIMIT})"


def test_a_function_call_the_client_accepts_fits_in_one_signed_message() -> None:
    client = _fake_client()

    def build(size: int) -> pb.FunctionCall:
        return DropletClient._function_call(client, "f", [b"a" * size])  # type: ignore[arg-type]

    call = build(_largest_accepted(build))
    call.response_address = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAzNjE3NTk0OQAAAAAAAAAA"
    body = envelope.encode([pb.Message(call=call)], SIGNER)
    assert len(body) <= LIMIT, f"accepted, then a message of {len(body)} bytes (limit {LIMIT})"


if __name__ == "__main__":
    pytest.main([__file__])
