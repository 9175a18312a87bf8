"""The in-process fleet over a broker with a max_message_size, refusing as RabbitMQ does.

RabbitMQ refuses a message over its max_message_size by closing the publisher's channel
(406 PRECONDITION_FAILED); Droplet's own AMQP connection only queues a publish's frames, so
the close is read at the connection's next poll or pump, not in the publish. What the client
writes on the closed channel meanwhile (acks, other publishes) is dropped by the broker.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.broker.stub import StubConnection
from droplet.errors import BrokerError
from droplet.proto import envelope, pb
from droplet.store import serializer

from .inprocess import SETTINGS, Fleet

BROKER_MAX_MESSAGE_BYTES = 256 * 1024  # RabbitMQ's max_message_size on this broker


def refusing_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every StubConnection refuse a publish over BROKER_MAX_MESSAGE_BYTES the way
    RabbitMQ does (the module's docstring)."""
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


def fleet_with_limit(max_message_bytes: int = BROKER_MAX_MESSAGE_BYTES) -> Fleet:
    return Fleet(settings=replace(SETTINGS, max_message_bytes=max_message_bytes))


def reconnect(fleet: Fleet, worker_id: str) -> None:
    """What run_with_reconnect does after a broker error: a new connection, a new session
    (the broker gives the unacked deliveries back, redelivered)."""
    member = fleet.workers[worker_id]
    member.conn.close()
    member.conn = fleet.broker.connect(worker_id)
    member.cycle = member.service.open_session(member.conn)


def pinned_pair(fleet: Fleet, first: tuple[str, Any], second: tuple[str, Any]) -> None:
    """Two workers, a scheduler, and DAG "d": first -> second, pinned on w1 and w2."""
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register(*first)
    fleet.register(*second)
    dag = pb.Dag(name="d", functions=[first[0], second[0]])
    dag.connections.add(source=first[0], sink=second[0])
    fleet.pin(dag, {first[0]: "w1", second[0]: "w2"})


def publish_call(fleet: Fleet, name: str, argument: Any, **fields: Any) -> str:
    """A FunctionCall "c-1" of `name` on the shared work queue, as a client sends it (more
    fields: direct_response, or maybe_done as a scheduler re-sends one after a lost worker)."""
    call = pb.FunctionCall(name=name, call_id="c-1", response_key="c-1",
                           response_address=fleet.reply_to, **fields)
    serializer.dump(argument, call.arguments.values.add())
    fleet.client.publish(fleet.names.work, envelope.encode([pb.Message(call=call)],
                                                           fleet.signer),
                         reply_to=fleet.reply_to)
    return call.call_id


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


def answer_to(fleet: Fleet, call_id: str) -> pb.GenericResponse:
    """The first answer the client got for call_id (fails when none came)."""
    fleet.answers()
    responses = [r for r in fleet.replies if r.call_id == call_id]
    assert responses, f"call {call_id} was never answered"
    return responses[0]
