"""The pieces of a highly available fleet: several broker URLs, their rotation, and the
queue arguments under queue_type quorum."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from droplet.broker.nodes import NodeOrder
from droplet.broker.rabbitmq import connection_parameters
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import (
    priorities_note,
    retry_topology,
    shared_topology,
    worker_topology,
)
from droplet.errors import ConfigurationError
from droplet.settings import Settings

A = "amqp://u:p@mq-1:5672/%2F"
B = "amqp://u:p@mq-2:5673/%2F"
C = "amqp://u:p@mq-3:5674/%2F"


def test_broker_url_takes_several_nodes_from_env_toml_and_keywords(tmp_path: Path) -> None:
    assert Settings.from_env({"DROPLET_BROKER_URL": f"{A}, {B},{C}"}).broker_urls == (A, B, C)
    config = tmp_path / "d.toml"
    config.write_text(f'[droplet]\nbroker_url = ["{A}", "{B}"]\nqueue_type = "quorum"\n')
    from_file = Settings.from_file(config)
    assert from_file.broker_urls == (A, B)
    assert from_file.quorum_queues
    assert Settings(broker_url=A).broker_urls == (A,)
    assert not Settings().quorum_queues, "classic by default"


def test_bad_queue_type_or_empty_url_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="queue_type"):
        Settings(queue_type="mirrored")
    with pytest.raises(ConfigurationError, match="broker_url"):
        Settings.from_env({"DROPLET_BROKER_URL": " , "})


def test_every_node_off_loopback_counts_as_exposure() -> None:
    local = "amqp://guest:guest@127.0.0.1:5672/%2F"
    settings = Settings(broker_url=f"{local},{B}", etcd_endpoints=("127.0.0.1:2379",))
    assert settings.unsigned_exposure() == ["broker mq-2"]


def test_connection_parameters_of_each_node() -> None:
    settings = Settings(broker_url=f"{A},{B}")
    assert connection_parameters(settings, "x").port == 5672, "the first by default"
    second = connection_parameters(settings, "x", B)
    assert (second.host, second.port) == ("mq-2", 5673)


def test_node_order_starts_after_the_node_that_last_worked() -> None:
    order = NodeOrder([A, B, C])
    assert order.attempt_order() == [0, 1, 2], "the first connection follows the list"
    order.connected(0)
    assert order.attempt_order() == [1, 2, 0], "a reconnect tries another node first"
    order.connected(2)
    assert order.attempt_order() == [0, 1, 2]
    single = NodeOrder([A])
    single.connected(0)
    assert single.attempt_order() == [0]
    with pytest.raises(ValueError):
        NodeOrder([])


def _arguments(topology: object) -> dict[str, dict[str, object]]:
    return {q.name: dict(q.arguments) for q in topology.queues}  # type: ignore[attr-defined]


def test_quorum_topology_makes_every_durable_queue_a_quorum_queue_without_priorities() -> None:
    names = QueueNames("ns", max_priority=9, quorum=True)
    queues = {**_arguments(shared_topology(names)), **_arguments(worker_topology(names, "w1")),
              **_arguments(retry_topology(names, 100))}
    assert set(queues) == {names.dead, names.calls, names.admin, names.work,
                           names.worker("w1"), names.inbox("w1"), names.retry(100)}
    for name, arguments in queues.items():
        assert arguments["x-queue-type"] == "quorum", name
        assert "x-max-priority" not in arguments, name
        if "x-dead-letter-exchange" in arguments:
            assert arguments["x-dead-letter-strategy"] == "at-least-once", name
            assert arguments["x-overflow"] == "reject-publish", name
    assert queues[names.worker("w1")]["x-expires"] == 30 * 60 * 1000
    assert queues[names.retry(100)]["x-message-ttl"] == 128
    assert all(q.durable and not q.exclusive and not q.auto_delete
               for q in shared_topology(names).queues)
    assert priorities_note(names) is not None
    assert priorities_note(QueueNames("ns", max_priority=0, quorum=True)) is None


def test_classic_topology_is_unchanged() -> None:
    names = QueueNames("ns", max_priority=9)
    queues = _arguments(shared_topology(names))
    assert queues[names.calls]["x-max-priority"] == 9
    assert all("x-queue-type" not in a for a in queues.values())
    assert queues[names.dead] == {}
    assert priorities_note(names) is None


def test_queue_names_follow_the_settings() -> None:
    names = QueueNames.of(Settings(namespace="abc", queue_type="quorum", max_priority=3))
    assert (names.namespace, names.quorum, names.max_priority) == ("abc", True, 3)


def test_on_a_cluster_replies_go_to_a_private_queue_that_counts_as_a_reply_address() -> None:
    from droplet.broker_config.names import is_reply_address, private_reply_queue

    first, second = private_reply_queue(), private_reply_queue()
    assert first != second
    assert is_reply_address(first) and is_reply_address("amq.rabbitmq.reply-to.x")
    assert not Settings().broker_cluster, "one node, classic queues: direct reply-to"
    assert Settings(broker_url=f"{A},{B}").broker_cluster
    assert Settings(queue_type="quorum").broker_cluster


@pytest.mark.parametrize("quorum", [True, False])
def test_under_quorum_queues_a_client_sends_again_a_request_the_broker_refused(
    quorum: bool,
) -> None:
    """A nack means the broker did not take the request (a quorum queue without a leader for
    a moment): the client publishes it again a second later, marked as a re-send. A classic
    client (no confirms) re-sends only after a reconnect."""
    from droplet.broker.stub import StubBroker
    from droplet.broker_config.names import RESENT_HEADER
    from droplet.client.pump import ReplyPump
    from droplet.signing import Signer

    broker = StubBroker()
    names = QueueNames("nack", quorum=quorum)
    refused: list[bytes] = []

    def nack_once(queue: str, body: bytes) -> bool:
        if queue == names.calls and not refused:
            refused.append(body)
            return True
        return False

    broker.nack_when = nack_once
    pump = ReplyPump(broker.connect, names, Signer(None))
    reader = broker.connect("reader")
    try:
        pump.send(names.calls, b"request", ["call-1"])
        pump.drive(0.05)
        pump.drive(0.05)
        assert reader.get(names.calls) is None, "not at once: a refusal lasts a moment"
        time.sleep(1.0)
        pump.drive(0.05)
        pump.drive(0.05)
        got = reader.get(names.calls)
        assert refused == [b"request"]
        if quorum:
            assert got is not None and got.body == b"request"
            assert (got.headers or {}).get(RESENT_HEADER) == 1
            assert reader.get(names.calls) is None, "sent again once"
        else:
            assert got is None, "a classic client does not learn of it"
    finally:
        pump.close()


def test_a_client_whose_every_request_is_refused_for_long_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection whose every publish is nacked for _RECONNECT_AFTER_S is dropped: the new
    one (on the next node) sends everything in flight again."""
    from droplet.broker.stub import StubBroker
    from droplet.client import refused
    from droplet.client.pump import ReplyPump
    from droplet.signing import Signer

    monkeypatch.setattr(refused, "_RESEND_AFTER_S", 0.05)
    monkeypatch.setattr(refused, "_RECONNECT_AFTER_S", 0.3)
    broker = StubBroker()
    names = QueueNames("refusing", quorum=True)
    broker.nack_when = lambda queue, body: queue == names.calls
    pump = ReplyPump(broker.connect, names, Signer(None))
    try:
        first_generation = pump.generation
        pump.send(names.calls, b"request", ["call-1"])
        deadline = time.monotonic() + 5
        while pump.generation == first_generation and time.monotonic() < deadline:
            pump.drive(0.02)
        assert pump.generation > first_generation, "a new connection"
        broker.nack_when = None
        while not broker.queue_depth(names.calls) and time.monotonic() < deadline:
            pump.drive(0.02)
        got = broker.connect("reader").get(names.calls)
        assert got is not None and got.body == b"request", "sent again on the new one"
    finally:
        pump.close()
