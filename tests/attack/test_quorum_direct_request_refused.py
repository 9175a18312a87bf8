"""Attack (a private RabbitMQ node, queue_type quorum, both transports): a quorum queue
refuses a direct call's request for a moment. Here a policy caps the shared work queue at 1
message while more wait in it (nobody consumes it: the client sees a worker's status record
in etcd, no worker runs), so the quorum queue (reject-publish) nacks every publish, as it does
while it has no leader.

Found: since direct requests became transient (c6643cb) they went out on the connection's
channel without publisher confirms (both transports ask for a confirm only of a persistent
message), so under quorum queues the broker's refusal never reached the client: the request
was dropped without a word and never sent again (the connection stayed open: no refusal was
seen), and the call would have waited for its whole timeout, while a stored call refused the
same way is sent again a second later (it came only when a stored call's refusals went on
for 5 s and made the client reconnect). A quorum queue keeps every message on disk whatever
its delivery mode, so the client now publishes a direct request under quorum queues as a
persistent one, with its confirm; under classic queues it stays transient.
Run: .venv/bin/python -m pytest -q tests/attack/test_quorum_direct_request_refused.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pika
import pytest

import droplet
from tests.conftest import Services
from tests.private_rabbit import PrivateRabbit, needs_rabbitmq_server

pytestmark = [pytest.mark.e2e, pytest.mark.fault, needs_rabbitmq_server]


def _depth(rabbit: PrivateRabbit, queue: str) -> int:
    """Messages in the queue (rabbitmqctl's listing counts none in a quorum queue here)."""
    conn = pika.BlockingConnection(pika.URLParameters(rabbit.url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", ["amqp", "pika"])
def test_a_refused_direct_request_is_sent_again_under_quorum_queues(
        services: Services, tmp_path: Path, transport: str) -> None:
    rabbit = PrivateRabbit(tmp_path / "rabbit", label="qdirect").start()
    try:
        settings = services.settings(queue_type="quorum",
                                     broker_transport=transport).with_(broker_url=rabbit.url)
        with droplet.connect(settings=settings) as client:
            client.kv.put(client.metadata.keys.worker("nobody"), b"")  # "alive", consumes nothing
            work = client.names.work
            filler = pika.BlockingConnection(pika.URLParameters(rabbit.url))
            channel = filler.channel()
            for _ in range(2):
                channel.basic_publish("", work, b"filler")
            filler.close()
            rabbit.ctl("set_policy", "--apply-to", "queues", "full", f"^{work}$",
                       json.dumps({"max-length": 1, "overflow": "reject-publish"}))
            time.sleep(1.0)  # the queue takes the policy
            before = _depth(rabbit, work)
            future = client.call_direct("f", 1)  # kept: in flight until forgotten
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:  # refused meanwhile
                client.pump.drive(0.1)
            assert _depth(rabbit, work) == before, "refused"
            rabbit.ctl("clear_policy", "full")
            deadline = time.monotonic() + 10
            while _depth(rabbit, work) < before + 1 and time.monotonic() < deadline:
                client.pump.drive(0.5)
            del future
            assert _depth(rabbit, work) == before + 1, "the refused direct request came again"
    finally:
        rabbit.stop()
