"""What the services rely on from a broker connection, checked against RabbitMQ for both
transports (broker/amqp.py, the default, and broker/rabbitmq.py): a refused declare and a
missing queue's queue_info leave the connection usable, get, pause without a redelivered
message, a consumer the broker cancels fails the next poll, an unroutable mandatory publish
is confirmed False, headers and properties arrive as sent, and call_soon_threadsafe wakes a
blocked poll."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.errors import BrokerError, QueueArgumentsError
from droplet.settings import Settings
from tests.broker_transports import confirms_numbered, connect, drain, transports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]



@transports
def test_refusals_leave_the_connection_usable(settings: Settings, transport: str) -> None:
    conn = connect(transport, settings, "transports-refusals")
    queue = f"tr-{uuid.uuid4().hex[:8]}"
    try:
        conn.declare(Topology(queues=[QueueSpec(queue, arguments={"x-max-priority": 9})]))
        with pytest.raises(QueueArgumentsError, match="migrate-queues"):
            conn.declare(Topology(queues=[QueueSpec(queue, arguments={"x-max-priority": 3})]))
        assert conn.is_open
        assert conn.queue_info(f"missing-{queue}") is None
        assert conn.is_open
        assert conn.queue_info(queue) == (0, 0)
        assert conn.get(queue) is None
        confirmed: list[bool] = []
        conn.publish(queue, b"one", headers={"n": 1, "t": {"a": [1, "x"]}}, priority=4,
                     reply_to="r", correlation_id="c", on_confirm=confirmed.append)
        conn.publish(f"missing-{queue}", b"lost", mandatory=True, on_confirm=confirmed.append)
        conn.publish(queue, b"", persistent=False)  # an empty body: a header frame only
        for _ in range(100):
            conn.poll(0.02)
            if len(confirmed) == 2:
                break
        assert sorted(confirmed) == [False, True], "the unroutable one is confirmed False"
        got = conn.get(queue)
        assert got is not None and got.body == b"one" and got.queue == queue
        assert (got.headers, got.priority, got.reply_to, got.correlation_id) == (
            {"n": 1, "t": {"a": [1, "x"]}}, 4, "r", "c")
        conn.ack(got.tag)
        empty = conn.get(queue)
        assert empty is not None and empty.body == b""
        conn.ack(empty.tag)
        assert conn.is_open
        conn.delete_queue(queue)
    finally:
        conn.close()


@transports
def test_pause_keeps_every_delivery_unredelivered(settings: Settings, transport: str) -> None:
    conn = connect(transport, settings, "transports-pause")
    queue = f"tp-{uuid.uuid4().hex[:8]}"
    try:
        conn.declare(Topology(queues=[QueueSpec(queue, durable=False)]))
        conn.consume(queue, prefetch=50)
        for i in range(200):
            conn.publish(queue, str(i).encode(), persistent=False)
        got = conn.poll(0.05)
        conn.pause(queue)
        assert not conn.consuming(queue)
        got += conn.poll(0)
        time.sleep(0.2)
        got += conn.poll(0.1)
        assert not any(d.redelivered for d in got)
        for d in got:
            conn.ack(d.tag)
        conn.resume(queue)
        for _ in range(200):
            more = conn.poll(0.05)
            for d in more:
                conn.ack(d.tag)
            got += more
            if len(got) >= 200:
                break
        assert sorted(int(d.body) for d in got) == list(range(200))
        assert not any(d.redelivered for d in got)
        conn.delete_queue(queue)
    finally:
        conn.close()


@transports
def test_a_consumer_the_broker_cancels_fails_the_next_poll(settings: Settings, transport: str
                                                           ) -> None:
    conn = connect(transport, settings, "transports-cancel")
    other = connect(transport, settings, "transports-cancel-2")
    queue = f"tc-{uuid.uuid4().hex[:8]}"
    try:
        conn.declare(Topology(queues=[QueueSpec(queue, durable=False)]))
        conn.consume(queue, prefetch=5)
        other.delete_queue(queue)
        with pytest.raises(BrokerError, match="cancelled"):
            for _ in range(100):
                conn.poll(0.05)
    finally:
        other.close()
        conn.close()


@transports
def test_call_soon_threadsafe_wakes_a_blocked_poll(settings: Settings, transport: str) -> None:
    conn = connect(transport, settings, "transports-wake")
    ran: list[float] = []
    try:
        started = time.monotonic()
        threading.Timer(0.2, lambda: conn.call_soon_threadsafe(
            lambda: ran.append(time.monotonic() - started))).start()
        conn.poll(15.0)
        assert ran and ran[0] < 5.0
        assert time.monotonic() - started < 5.0, "the poll returned once the callback ran"
    finally:
        conn.close()


@transports
def test_more_missing_queues_than_channel_numbers(settings: Settings, transport: str) -> None:
    """Each missing queue's queue_info closes the channel; a dashboard asks for missing queues
    all day, past RabbitMQ's 2047 channels per connection: the numbers must be reused."""
    conn = connect(transport, settings, "transports-channels")
    try:
        for _ in range(2100):
            assert conn.queue_info(f"missing-{uuid.uuid4().hex}") is None
        assert conn.is_open
        confirmed: list[bool] = []
        queue = f"tn-{uuid.uuid4().hex[:8]}"
        conn.declare(Topology(queues=[QueueSpec(queue)]))
        conn.publish(queue, b"x", on_confirm=confirmed.append)
        for _ in range(100):
            conn.poll(0.02)
            if confirmed:
                break
        assert confirmed == [True]
        conn.delete_queue(queue)
    finally:
        conn.close()


@transports
def test_a_request_without_a_confirm_skips_the_confirmed_channel_and_is_answered(
        settings: Settings, transport: str) -> None:
    """A client's request (needs_confirm=False) goes without a publisher confirm: each one
    cost RabbitMQ about 0.2 ms of CPU. Its reply, sent to the broker's direct reply-to name
    for the channel it came from, still reaches the client; and so does the reply to a
    confirmed request (a DAG call's trigger sent straight to a worker)."""
    client = connect(transport, settings, "transports-unconfirmed")
    server = connect(transport, settings, "transports-unconfirmed-server")
    queue = f"tr-{uuid.uuid4().hex[:8]}"
    try:
        server.declare(Topology(queues=[QueueSpec(queue)]))
        address = client.consume_replies()
        numbered = confirms_numbered(client)
        client.publish(queue, b"plain", reply_to=address, correlation_id="p",
                       needs_confirm=False)
        assert confirms_numbered(client) == numbered, "a plain request was numbered a confirm"
        confirmed: list[bool] = []
        client.publish(queue, b"direct", reply_to=address, correlation_id="d", mandatory=True,
                       on_confirm=confirmed.append)
        assert confirms_numbered(client) == numbered + 1
        server.consume(queue, prefetch=10)
        asked: list[Any] = []
        for _ in range(200):
            asked += server.poll(0.02)
            if len(asked) == 2:
                break
        assert sorted(d.body for d in asked) == [b"direct", b"plain"]
        for delivery in asked:
            server.publish(delivery.reply_to, b"re:" + delivery.body, persistent=False,
                           correlation_id=delivery.correlation_id)
            server.ack(delivery.tag)
        answers: list[Any] = []
        for _ in range(200):
            answers += client.poll(0.02)
            if len(answers) == 2 and confirmed:
                break
        assert sorted((d.correlation_id, d.body) for d in answers) == [
            ("d", b"re:direct"), ("p", b"re:plain")]
        assert confirmed == [True]
        assert client.is_open and server.is_open
        server.delete_queue(queue)
    finally:
        client.close()
        server.close()


@transports
def test_delete_if_empty_spares_a_queue_with_a_message_and_the_connection_goes_on(
        settings: Settings, transport: str) -> None:
    """The reaper deletes a dead worker's queue only when empty (scheduler/reaper.py): the
    broker refuses by closing the channel, which the connection reopens (confirms too)."""
    conn = connect(transport, settings, "transports-delete-if-empty")
    queue = f"tr-{uuid.uuid4().hex[:8]}"
    try:
        conn.declare(Topology(queues=[QueueSpec(queue)]))
        conn.publish(queue, b"waiting")
        assert conn.delete_queue(queue, if_empty=True) is False
        assert conn.is_open
        assert conn.queue_info(queue) == (1, 0), "the queue and its message stay"
        confirmed: list[bool] = []
        conn.publish(queue, b"second", on_confirm=confirmed.append)
        for _ in range(100):
            conn.poll(0.02)
            if confirmed:
                break
        assert confirmed == [True], "publisher confirms work on the reopened channel"
        for body in (b"waiting", b"second"):
            got = conn.get(queue)
            assert got is not None and got.body == body
            conn.ack(got.tag)
        assert conn.delete_queue(queue, if_empty=True) is True
        assert conn.queue_info(queue) is None
        assert conn.delete_queue(f"missing-{queue}", if_empty=True) is True
    finally:
        conn.close()


@transports
def test_delete_if_empty_spares_a_queue_whose_consumer_holds_a_delivery(
        settings: Settings, transport: str) -> None:
    """RabbitMQ's if-empty counts waiting messages only: a consumer's unacked delivery would
    go with the queue. The delete asks for an unused queue too
    (tests/unit/test_reaper_delete_while_consumed.py)."""
    holder = connect(transport, settings, "transports-delete-held")
    conn = connect(transport, settings, "transports-delete-if-unused")
    queue = f"tr-{uuid.uuid4().hex[:8]}"
    try:
        conn.declare(Topology(queues=[QueueSpec(queue)]))
        conn.publish(queue, b"held")
        holder.consume(queue, prefetch=1)
        held = drain(holder, 1)
        assert [d.body for d in held] == [b"held"]
        assert conn.queue_info(queue) == (0, 1)
        assert conn.delete_queue(queue, if_empty=True) is False
        assert conn.is_open
        holder.close()
        for _ in range(50):
            if conn.queue_info(queue) == (1, 0):
                break
            time.sleep(0.02)
        assert conn.queue_info(queue) == (1, 0), "the held delivery is back in its queue"
    finally:
        holder.close()
        conn.delete_queue(queue)
        conn.close()
