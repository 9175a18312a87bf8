"""A message that ends its worker's broker session on every delivery is poison.

The poison limit is what stops a message that takes down worker after worker. A broker error
that ends the session is not always the broker's fault: the message can cause it, on every
delivery. Here a DAG step's function sends another worker a message the broker refuses by
closing the connection (RabbitMQ's max_message_size set below Droplet's max_message_bytes, as
tests/attack/small_broker.py's node does); the function shrugs the error off and returns, and
the step's trigger publish then fails on the closed connection, so the BrokerError leaves
`cycle.run`. The step is not done (its result travels only in that trigger), so every
redelivery runs it again and kills the next session in turn, unless the session's end leaves
the delivery's count behind (worker/service.py serve_once; an attack found a change that
cleared it loop the step for ever). Over max_message_bytes, lib.send refuses in the function
and the session lives (the second test).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.broker.stub import StubConnection
from droplet.errors import BrokerError
from droplet.proto import pb

from .inprocess import SETTINGS, Fleet
from .refusing_broker import reconnect

BROKER_MAX_MESSAGE_BYTES = 256 * 1024  # RabbitMQ's max_message_size on this broker
DROPLET_MAX_MESSAGE_BYTES = 512 * 1024  # set above it by mistake
RUNS: list[str] = []
SEND_ERRORS: list[Exception] = []


def notify(lib: Any, x: int, size: int) -> int:
    RUNS.append(lib.getid())
    try:  # best effort: a note to the next step's worker
        lib.send("w2", b"n" * size)
    except Exception as exc:
        SEND_ERRORS.append(exc)
    return x + 1


def after(lib: Any, x: int) -> int:
    return 2 * x


def broker_with_a_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker closes the connection of whoever publishes a message over its limit."""
    publish = StubConnection.publish

    def limited(self: StubConnection, queue: str, body: bytes, **kwargs: Any) -> None:
        if len(body) > BROKER_MAX_MESSAGE_BYTES:
            self.close()  # 406 PRECONDITION_FAILED, connection closed
            return
        publish(self, queue, body, **kwargs)

    monkeypatch.setattr(StubConnection, "publish", limited)




def pinned_dag(fleet: Fleet) -> None:
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("notify", notify)
    fleet.register("after", after)
    dag = pb.Dag(name="d", functions=["notify", "after"])
    dag.connections.add(source="notify", sink="after")
    fleet.pin(dag, {"notify": "w1", "after": "w2"})


def test_a_step_that_kills_its_workers_session_every_time_is_still_poison(
        monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    broker_with_a_size_limit(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=DROPLET_MAX_MESSAGE_BYTES))
    pinned_dag(fleet)
    call_id = fleet.call_dag("d", {"notify": [1, BROKER_MAX_MESSAGE_BYTES + 1]})
    limit = fleet.settings.dead_letter_max_redeliveries

    session_faults = 0
    for _ in range(limit + 4):  # more deliveries than the poison limit allows
        fleet.schedule()
        try:
            fleet.run_until_quiet()
        except BrokerError:
            session_faults += 1
            reconnect(fleet, "w1")
            continue
        break

    assert len(RUNS) <= limit + 1, (
        f"the step ran {len(RUNS)} times, each ending its worker's session "
        f"({session_faults} session faults), past dead_letter_max_redeliveries={limit}: "
        "it is never taken for poison")
    answers = fleet.answers()
    assert answers.get(call_id), "the DAG call was never answered"
    assert fleet.broker.queue_depth(fleet.names.dead) == 1, "dead-lettered as poison"


def test_a_send_over_max_message_bytes_is_refused_in_the_function(
        monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    SEND_ERRORS.clear()
    broker_with_a_size_limit(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES // 2))
    pinned_dag(fleet)
    call_id = fleet.call_dag("d", {"notify": [1, BROKER_MAX_MESSAGE_BYTES + 1]})
    fleet.schedule()
    fleet.run_until_quiet()  # no BrokerError: the session lives
    assert [type(e).__name__ for e in SEND_ERRORS] == ["ValueTooLargeError"], SEND_ERRORS
    assert "max_message_bytes" in str(SEND_ERRORS[0])
    assert len(RUNS) == 1
    assert fleet.answers().get(call_id) == [4]
    assert fleet.broker.queue_depth(fleet.names.dead) in (None, 0)
