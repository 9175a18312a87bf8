"""Attack on 0fd16cc: a broker refuses a message over its max_message_size the way RabbitMQ
does, by closing the channel AFTER the publish went out; the worker reads the close at its next
poll, not in the publish.

test_poison_session_killer.py models the refusal as a publish that closes the connection at
once, so the BrokerError always leaves `cycle.run` and `serve_once` leaves the poison count
(PoisonCounter.forget). With the real AMQP connection (droplet/broker/amqp.py) `publish` only
queues frames: the broker's channel.close (406 PRECONDITION_FAILED "message size ... larger
than configured max size") is read by the next poll()/pump(). A publish the cycle itself makes
(a step's trigger carrying its result, a direct answer) is confirmed after `cycle.run` has
returned, its AckGate still waiting: `serve_once` then calls PoisonCounter.done, which deletes
the count, and the session ends a moment later in `_next`'s poll. The step is redelivered,
counted 1, run, cleared again: the poison limit is never reached and it loops for ever.

Nothing checks what the cycle publishes against max_message_bytes either (lib.send / lib.call
are checked since 0fd16cc): a DAG step whose result is over max_message_bytes, or a call with
a direct response, makes the worker publish a message the broker refuses (at RabbitMQ 4's
defaults both limits are 16 MiB). Both are refused before publishing now
(test_step_result_over_limit.py, test_direct_answer_over_limit.py); the count still ends a
step when Droplet's limit is set above the broker's, as here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.broker.stub import StubConnection
from droplet.errors import BrokerError
from droplet.proto import pb

from .inprocess import SETTINGS, Fleet

BROKER_MAX_MESSAGE_BYTES = 256 * 1024  # RabbitMQ's max_message_size on this broker
RUNS: list[str] = []


def big(lib: Any, size: int) -> bytes:
    RUNS.append(lib.getid())
    return b"r" * size


def after(lib: Any, blob: bytes) -> int:
    return len(blob)


def broker_that_refuses_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message over the limit is not taken (never confirmed); the channel.close the broker
    sends back is read at the connection's next poll or pump, which then raises, as
    AmqpConnection.poll does ('RabbitMQ poll failed: ...'). Until then whatever the client
    writes on the closed channel is dropped by the broker."""
    publish, poll, pump = StubConnection.publish, StubConnection.poll, StubConnection.pump
    ack, reject = StubConnection.ack, StubConnection.reject

    def limited(self: StubConnection, queue: str, body: bytes, **kwargs: Any) -> None:
        if getattr(self, "refused", False):
            return  # frames on a channel the broker closed: discarded
        if len(body) > BROKER_MAX_MESSAGE_BYTES:
            self.refused = True  # type: ignore[attr-defined]
            return
        publish(self, queue, body, **kwargs)

    def reading(original: Any) -> Any:
        def read(self: StubConnection, *args: Any, **kwargs: Any) -> Any:
            if getattr(self, "refused", False):
                self.close()
                raise BrokerError("RabbitMQ poll failed: PRECONDITION_FAILED - message size "
                                  "is larger than configured max size")
            return original(self, *args, **kwargs)
        return read

    def dropped(original: Any) -> Any:
        def write(self: StubConnection, *args: Any, **kwargs: Any) -> Any:
            if getattr(self, "refused", False):
                return None
            return original(self, *args, **kwargs)
        return write

    monkeypatch.setattr(StubConnection, "publish", limited)
    monkeypatch.setattr(StubConnection, "poll", reading(poll))
    monkeypatch.setattr(StubConnection, "pump", reading(pump))
    monkeypatch.setattr(StubConnection, "ack", dropped(ack))
    monkeypatch.setattr(StubConnection, "reject", dropped(reject))


def reconnect(fleet: Fleet, worker_id: str) -> None:
    """What run_with_reconnect does after a broker error."""
    member = fleet.workers[worker_id]
    member.conn.close()
    member.conn = fleet.broker.connect(worker_id)
    member.cycle = member.service.open_session(member.conn)


def pinned_dag(fleet: Fleet) -> None:
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("big", big)
    fleet.register("after", after)
    dag = pb.Dag(name="d", functions=["big", "after"])
    dag.connections.add(source="big", sink="after")
    fleet.pin(dag, {"big": "w1", "after": "w2"})


def drive(fleet: Fleet, rounds: int) -> int:
    """Runs the fleet, reconnecting a worker whose session ended; the session faults."""
    faults = 0
    for _ in range(rounds):
        if fleet.scheduler is not None:
            fleet.schedule()
        try:
            fleet.run_until_quiet()
        except BrokerError:
            faults += 1
            for worker_id, member in fleet.workers.items():
                if not member.conn.is_open or getattr(member.conn, "refused", False):
                    reconnect(fleet, worker_id)
            continue
        break
    return faults


def test_a_step_whose_trigger_the_broker_refuses_later_is_still_poison(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario of test_poison_session_killer.py, with the refusal read as RabbitMQ
    sends it: the count must survive the session's end all the same."""
    RUNS.clear()
    broker_that_refuses_later(monkeypatch)
    # max_message_bytes above the broker's limit (by mistake), as in the 0fd16cc test: only
    # the poison count can stop the step.
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=2 * BROKER_MAX_MESSAGE_BYTES))
    pinned_dag(fleet)
    call_id = fleet.call_dag("d", {"big": [BROKER_MAX_MESSAGE_BYTES + 1]})
    limit = fleet.settings.dead_letter_max_redeliveries

    faults = drive(fleet, limit + 4)

    assert len(RUNS) <= limit + 1, (
        f"the step ran {len(RUNS)} times, each ending its worker's session ({faults} "
        f"session faults), past dead_letter_max_redeliveries={limit}: the count was cleared "
        "by PoisonCounter.done before the broker's refusal was read")
    assert fleet.answers().get(call_id), "the DAG call was never answered"
