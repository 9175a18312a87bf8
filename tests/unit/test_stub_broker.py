"""droplet.broker.stub (RabbitMQ's delivery semantics in memory) and droplet.broker.dispatch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from droplet.broker.interface import Delivery, QueueSpec, Topology
from droplet.broker.stub import StubBroker, StubConnection
from droplet.errors import BrokerError

TICK = 0.02  # poll timeout when nothing is expected; never asserted on


@pytest.fixture
def broker() -> StubBroker:
    return StubBroker()


@pytest.fixture
def conns(broker: StubBroker) -> Iterator[list[StubConnection]]:
    """Connections opened by a test (via `connect`), closed at its end."""
    opened: list[StubConnection] = []
    yield opened
    for conn in opened:
        conn.close()


def connect(broker: StubBroker, conns: list[StubConnection]) -> StubConnection:
    conn = broker.connect()
    conns.append(conn)
    return conn


def declare(conn: StubConnection, *specs: QueueSpec) -> None:
    conn.declare(Topology(queues=list(specs)))


def poll_until(conn: StubConnection, count: int, timeout_s: float = 5.0) -> list[Delivery]:
    """Polls until `count` deliveries arrived, for at most timeout_s."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and (left := deadline - time.monotonic()) > 0:
        out += conn.poll(left)
    assert len(out) >= count, f"only {len(out)} of {count} deliveries arrived"
    return out


# -- publish, consume, ack -------------------------------------------------------------------


def test_publish_consume_ack(broker: StubBroker, conns: list[StubConnection]) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=10)

    conn.publish("q", b"body", correlation_id="c-1", headers={"h": 1}, reply_to="somewhere")
    [delivery] = poll_until(conn, 1)

    assert delivery.queue == "q"
    assert delivery.body == b"body"
    assert delivery.correlation_id == "c-1"
    assert delivery.reply_to == "somewhere"
    assert dict(delivery.headers or {}) == {"h": 1}
    assert delivery.redelivered is False
    conn.ack(delivery.tag)
    conn.close()
    assert broker.queue_depth("q") == 0, "an acked message is not requeued on close"


def test_messages_are_delivered_in_order(broker: StubBroker, conns: list[StubConnection]) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    for i in range(5):
        conn.publish("q", str(i).encode())
    assert broker.queue_depth("q") == 5

    conn.consume("q", prefetch=10)
    deliveries = poll_until(conn, 5)

    assert [d.body for d in deliveries] == [b"0", b"1", b"2", b"3", b"4"]
    assert len({d.tag for d in deliveries}) == 5
    assert broker.queue_depth("q") == 0


def test_poll_with_nothing_to_deliver_returns_empty(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=1)

    assert conn.poll(TICK) == []


def test_declaring_the_same_queue_again_keeps_its_messages(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.publish("q", b"m")

    declare(conn, QueueSpec("q"))

    assert broker.queue_depth("q") == 1


def test_ack_of_an_unknown_tag_is_an_error(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)

    with pytest.raises(BrokerError, match="unknown delivery tag"):
        conn.ack(99)


def test_ack_multiple_settles_every_earlier_tag(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=3)
    for body in (b"a", b"b", b"c", b"d"):
        conn.publish("q", body)
    first = poll_until(conn, 3)

    conn.ack(first[1].tag, multiple=True)  # settles a and b; c stays unacked

    more = poll_until(conn, 1)
    assert [d.body for d in first] == [b"a", b"b", b"c"]
    assert [d.body for d in more] == [b"d"]
    with pytest.raises(BrokerError):
        conn.ack(first[0].tag)


def test_consume_of_a_missing_queue_is_an_error(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)

    with pytest.raises(BrokerError, match="no queue"):
        conn.consume("nope", prefetch=1)


def test_a_closed_connection_refuses_work(broker: StubBroker) -> None:
    conn = broker.connect()
    declare(conn, QueueSpec("q"))
    conn.close()
    conn.close()  # closing twice is harmless

    assert conn.is_open is False
    with pytest.raises(BrokerError):
        conn.publish("q", b"m")
    with pytest.raises(BrokerError):
        conn.poll(TICK)
    assert broker.queue_depth("q") == 0


def test_get_takes_one_message_with_manual_ack(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    assert conn.get("q") is None
    assert conn.get("missing") is None
    conn.publish("q", b"one")
    conn.publish("q", b"two")

    got = conn.get("q")

    assert got is not None and got.body == b"one"
    assert broker.queue_depth("q") == 1
    conn.reject(got.tag, requeue=True)
    again = conn.get("q")
    assert again is not None and again.body == b"one" and again.redelivered is True
    conn.ack(again.tag)
    assert conn.queue_depth("q") == 1


def test_queue_depth_and_delete_queue(broker: StubBroker, conns: list[StubConnection]) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.publish("q", b"m")

    assert conn.queue_depth("q") == 1
    conn.delete_queue("q")
    assert conn.queue_depth("q") is None


# -- prefetch --------------------------------------------------------------------------------


def test_prefetch_one_holds_the_second_message_for_another_consumer(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    first = connect(broker, conns)
    declare(first, QueueSpec("work"))
    first.consume("work", prefetch=1)
    first.publish("work", b"m1")
    first.publish("work", b"m2")

    [d1] = poll_until(first, 1)
    assert first.poll(TICK) == [], "nothing more before m1 is acked"
    assert broker.queue_depth("work") == 1

    second = connect(broker, conns)
    second.consume("work", prefetch=1)
    [d2] = poll_until(second, 1)
    assert (d1.body, d2.body) == (b"m1", b"m2")

    first.publish("work", b"m3")
    assert first.poll(TICK) == [] and second.poll(TICK) == [], "both consumers are busy"
    first.ack(d1.tag)
    [d3] = poll_until(first, 1)
    assert d3.body == b"m3"


def test_consumers_share_a_queue_round_robin(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    a = connect(broker, conns)
    b = connect(broker, conns)
    declare(a, QueueSpec("q"))
    a.consume("q", prefetch=10)
    b.consume("q", prefetch=10)
    for i in range(4):
        a.publish("q", str(i).encode())

    got_a = [d.body for d in poll_until(a, 2)]
    got_b = [d.body for d in poll_until(b, 2)]

    assert sorted(got_a + got_b) == [b"0", b"1", b"2", b"3"]
    assert len(got_a) == len(got_b) == 2


def test_prefetch_zero_means_unlimited(broker: StubBroker, conns: list[StubConnection]) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=0)
    conn.publish("q", b"m")

    assert [d.body for d in conn.poll(TICK)] == [b"m"]


# -- reject and close ------------------------------------------------------------------------


def test_reject_with_requeue_redelivers(broker: StubBroker, conns: list[StubConnection]) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=1)
    conn.publish("q", b"m")
    [d] = poll_until(conn, 1)

    conn.reject(d.tag, requeue=True)

    [again] = poll_until(conn, 1)
    assert again.body == b"m"
    assert again.redelivered is True
    assert again.tag != d.tag


def test_reject_without_requeue_dead_letters(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(
        conn,
        QueueSpec("ns.dead"),
        QueueSpec("ns.calls", arguments={"x-dead-letter-exchange": "",
                                         "x-dead-letter-routing-key": "ns.dead"}),
    )
    conn.consume("ns.calls", prefetch=1)
    conn.publish("ns.calls", b"poison", correlation_id="c9")
    [d] = poll_until(conn, 1)

    conn.reject(d.tag, requeue=False)

    assert broker.queue_depth("ns.calls") == 0
    dead = conn.get("ns.dead")
    assert dead is not None
    assert (dead.body, dead.correlation_id) == (b"poison", "c9")


def test_reject_without_requeue_or_dead_letter_queue_drops(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=1)
    conn.publish("q", b"m")
    [d] = poll_until(conn, 1)

    conn.reject(d.tag, requeue=False)

    assert broker.queue_depth("q") == 0
    assert conn.poll(TICK) == []


def test_close_requeues_unacked_deliveries_as_redelivered(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    dying = broker.connect()
    declare(dying, QueueSpec("q"))
    dying.consume("q", prefetch=5)
    dying.publish("q", b"acked")
    dying.publish("q", b"held")
    acked, held = poll_until(dying, 2)
    dying.ack(acked.tag)

    dying.close()

    assert broker.queue_depth("q") == 1
    survivor = connect(broker, conns)
    survivor.consume("q", prefetch=5)
    [again] = poll_until(survivor, 1)
    assert again.body == b"held" == held.body
    assert again.redelivered is True


def test_close_requeues_several_unacked_in_their_original_order(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    dying = broker.connect()
    declare(dying, QueueSpec("q"))
    dying.consume("q", prefetch=5)
    for body in (b"1", b"2", b"3"):
        dying.publish("q", body)
    poll_until(dying, 3)

    dying.close()

    survivor = connect(broker, conns)
    survivor.consume("q", prefetch=5)
    assert [d.body for d in poll_until(survivor, 3)] == [b"1", b"2", b"3"]


# -- confirmations, replies, wake-ups --------------------------------------------------------


def test_mandatory_publish_to_a_missing_queue_confirms_false(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    confirms: list[tuple[str, bool]] = []

    conn.publish("missing", b"m", mandatory=True, on_confirm=lambda ok: confirms.append(("m", ok)))
    conn.publish("q", b"m", mandatory=True, on_confirm=lambda ok: confirms.append(("q", ok)))
    assert confirms == [], "confirmations run inside a later poll"
    conn.poll(TICK)

    assert confirms == [("m", False), ("q", True)]
    assert broker.queue_depth("q") == 1


def test_non_mandatory_publish_to_a_missing_queue_is_dropped_silently(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    confirms: list[bool] = []

    conn.publish("missing", b"m", on_confirm=confirms.append)
    conn.poll(TICK)

    assert confirms == [True]
    assert broker.queue_depth("missing") is None


def test_direct_reply_to_reaches_the_requesting_connection(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    client = connect(broker, conns)
    server = connect(broker, conns)
    declare(server, QueueSpec("requests"))
    server.consume("requests", prefetch=1)
    address = client.consume_replies()

    client.publish("requests", b"ping", reply_to=address, correlation_id="r1")
    [request] = poll_until(server, 1)
    assert request.reply_to is not None and request.reply_to != address
    server.publish(request.reply_to, b"pong", correlation_id=request.correlation_id)
    server.ack(request.tag)

    [reply] = poll_until(client, 1)
    assert (reply.queue, reply.body, reply.correlation_id) == (address, b"pong", "r1")


def test_call_soon_threadsafe_runs_inside_poll_and_wakes_it(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    ran: list[str] = []
    ran_in: list[threading.Thread] = []

    def job() -> None:
        ran.append("job")
        ran_in.append(threading.current_thread())

    thread = threading.Thread(target=conn.call_soon_threadsafe, args=(job,))
    thread.start()
    thread.join(5)
    assert ran == [], "nothing runs before poll"

    assert conn.poll(30) == []  # returns once the callback ran, long before 30 s
    assert ran == ["job"]
    assert ran_in == [threading.current_thread()]


def test_a_paused_consumer_gets_nothing_until_resumed(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    conn.consume("q", prefetch=1)
    assert conn.consuming("q")
    conn.pause("q")
    conn.publish("q", b"m")
    assert conn.poll(TICK) == [] and not conn.consuming("q")
    conn.resume("q")
    assert [d.body for d in poll_until(conn, 1)] == [b"m"]


def test_an_injected_nack_fails_the_confirm_and_routes_nothing(
    broker: StubBroker, conns: list[StubConnection]
) -> None:
    conn = connect(broker, conns)
    declare(conn, QueueSpec("q"))
    broker.nack_when = lambda queue, body: body == b"lost"
    confirms: list[bool] = []
    conn.publish("q", b"lost", on_confirm=confirms.append)
    conn.publish("q", b"kept", on_confirm=confirms.append)
    conn.poll(TICK)
    assert confirms == [False, True]
    assert broker.queue_depth("q") == 1
