"""A message whose correlation id, reply-to or message id is not UTF-8 (anyone who may
publish to a Droplet queue can send one) must not break the consumer. The lean transport
decoded these properties strictly: a UnicodeDecodeError (no BrokerError) escaped every
poll, the owner reconnected, the unacked message came back and failed the poll again, for
ever: a worker could never consume past it (and the poison counter never saw it). Now the
ids come through with U+FFFD for what is not UTF-8 (protobuf's string fields refuse lone
surrogates: a refusal naming the call id would raise) and an answer can carry them back; a
reply-to that is not UTF-8 reads as none: RabbitMQ closes the connection (541
INTERNAL_ERROR) that publishes to such a direct reply-to address."""

from __future__ import annotations

import uuid

import pika
import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.proto import pb
from droplet.settings import Settings
from tests.broker_transports import connect, drain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

BAD = b"\xff\xfe-not-utf8"



def test_non_utf8_properties(settings: Settings) -> None:
    conn = connect("amqp", settings, "attack-non-utf8")
    queue = f"attack-utf8-{uuid.uuid4().hex[:8]}"
    raw = pika.BlockingConnection(pika.URLParameters(settings.broker_urls[0]))
    try:
        conn.declare(Topology(queues=[QueueSpec(queue)]))
        channel = raw.channel()
        channel.basic_publish("", queue, b"before")
        channel.basic_publish("", queue, b"hostile", properties=pika.BasicProperties(
            correlation_id=BAD, reply_to=BAD, message_id=BAD))  # type: ignore[arg-type]
        channel.basic_publish("", queue, b"after")
        conn.consume(queue, prefetch=10)
        got = drain(conn, 3, rounds=100)
        assert [d.body for d in got] == [b"before", b"hostile", b"after"]
        hostile = got[1]
        assert hostile.correlation_id is not None and hostile.reply_to is None
        pb.GenericResponse(call_id=hostile.correlation_id).SerializeToString()  # takes it
        for d in got:
            conn.ack(d.tag)
        # Answered as a worker would: to its reply-to, with its correlation id.
        conn.publish(queue, b"answer", correlation_id=hostile.correlation_id,
                     persistent=False)
        answer = drain(conn, 1, rounds=100)
        assert [d.body for d in answer] == [b"answer"]
        assert answer[0].correlation_id == hostile.correlation_id
        conn.ack(answer[0].tag)
        method, _props, _ = channel.basic_get(queue, auto_ack=True)
        assert method is None  # nothing left over, nothing twice
    finally:
        raw.close()
        try:
            conn.delete_queue(queue)
        finally:
            conn.close()

