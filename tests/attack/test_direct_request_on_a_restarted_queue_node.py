"""Attack (a private 2-node RabbitMQ cluster, classic queues, real etcd): the node that holds
the shared work queue restarts while a client connected to the other node has a direct call
and a stored call waiting in it (nobody consumes the queue: the client sees a worker's status
record in etcd, no worker runs).

Found: since direct requests became transient (c6643cb), such a restart dropped the direct
call's request, and its client, whose own node and connection stayed up, never reconnected
and so never sent it again: the call would have waited for its whole timeout, though its
client was alive, against the README's "only a direct call whose client is gone too is lost".
The stored call's request (persistent) was still there. On a RabbitMQ cluster (several
broker URLs, or quorum queues) direct requests now stay persistent; on one node they are
transient, where a restart of RabbitMQ is one of the client's connection too.
Run: .venv/bin/python -m pytest -q tests/attack/test_direct_request_on_a_restarted_queue_node.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest

import droplet
from tests.conftest import Services
from tests.private_rabbit import PrivateRabbitCluster, needs_rabbitmq_server

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.cluster, needs_rabbitmq_server]


def _depth(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_a_direct_request_outlives_a_restart_of_its_queues_node(
        services: Services, tmp_path: Path) -> None:
    rabbits = PrivateRabbitCluster(tmp_path / "rabbits", size=2, label="cqnode").start()
    try:
        near, far = rabbits.nodes
        on_far = services.settings().with_(broker_url=far.url)
        with droplet.connect(settings=on_far):  # the shared queues are declared on `far`
            pass
        # Both nodes known, `near` first: the client's connection is to `near`.
        settings = on_far.with_(broker_url=f"{near.url},{far.url}")
        with droplet.connect(settings=settings) as client:
            client.kv.put(client.metadata.keys.worker("nobody"), b"")
            waiting = [client.call_direct("f", 1), client.call("f", 2)]  # kept: in flight
            client.pump.drive(0.3)
            work = client.names.work
            assert _depth(near.url, work) == 2
            generation = client.pump.generation
            far.ctl("stop_app")
            far.ctl("start_app")
            deadline = time.monotonic() + 10
            while _depth(near.url, work) < 2 and time.monotonic() < deadline:
                client.pump.drive(0.5)
            assert client.pump.generation == generation, "the client's connection stayed up"
            assert _depth(near.url, work) == 2, "both requests are there after the restart"
            del waiting
    finally:
        rabbits.stop()
