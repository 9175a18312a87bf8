"""What the transport writes to the broker's socket: one send per batch of frames, not one per
frame (broker/amqp_wire.py `flush`, broker/rabbitmq.py `_write_out`), for both transports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.settings import Settings
from tests.broker_transports import TRANSPORTS, connect, on_send

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture(params=TRANSPORTS)
def counted(settings: Settings, request: pytest.FixtureRequest
            ) -> Iterator[tuple[Any, list[bytes], str]]:
    """A connection (without confirms, as a client's) whose socket sends are recorded."""
    conn = connect(request.param, settings, "writes-test", confirms=False)
    queue = f"writes-{uuid.uuid4().hex[:8]}"
    conn.declare(Topology(queues=[QueueSpec(queue, durable=False, auto_delete=True)]))
    sent: list[bytes] = []

    def send(real: Any, data: Any) -> int:
        sent.append(bytes(data))
        return int(real(data))

    on_send(conn, send)
    try:
        yield conn, sent, queue
    finally:
        conn.delete_queue(queue)
        conn.close()


def test_a_publish_is_one_send_of_its_three_frames(
        counted: tuple[Any, list[bytes], str]) -> None:
    conn, sent, queue = counted
    conn.publish(queue, b"x" * 300, persistent=False)
    assert len(sent) == 1, f"{len(sent)} sends for one publish"
    assert sent[0].count(b"\xce") >= 3, "method, header and body frames, each ending 0xCE"


def test_an_answer_and_the_ack_of_its_delivery_go_out_in_one_send(
        counted: tuple[Any, list[bytes], str]) -> None:
    conn, sent, queue = counted
    conn.consume(queue, prefetch=1)
    conn.publish(queue, b"request", persistent=False)
    deliveries = []
    for _ in range(50):
        deliveries += conn.poll(0.1)
        if deliveries:
            break
    assert deliveries and deliveries[0].body == b"request"
    sent.clear()
    with conn.written_together():
        conn.publish(queue, b"answer", persistent=False)
        conn.ack(deliveries[0].tag)
    assert len(sent) == 1, f"{len(sent)} sends for an answer and an ack"
    answer = []
    for _ in range(50):
        answer += conn.poll(0.1)
        if answer:
            break
    assert answer and answer[0].body == b"answer", "what was joined arrives whole"


def test_a_large_message_goes_frame_by_frame_and_arrives_whole(
        counted: tuple[Any, list[bytes], str]) -> None:
    conn, sent, queue = counted
    conn.consume(queue, prefetch=1)
    body = bytes(range(256)) * 8192  # 2 MiB: many frames, not joined into one buffer
    conn.publish(queue, body, persistent=False)
    assert len(sent) > 3
    assert max(len(chunk) for chunk in sent) < len(body)
    got = []
    for _ in range(100):
        got += conn.poll(0.1)
        if got:
            break
    assert got and got[0].body == body
