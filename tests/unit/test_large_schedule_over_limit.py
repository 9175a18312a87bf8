"""A DAG call's arguments near max_message_bytes: the schedule that carries them.

The client accepts a DagCall of up to max_message_bytes (client/dagcalls.checked_size). The
scheduler makes its schedule from it (the arguments, the DAG, the locations) and sends it to
the sources inside a trigger: larger than the call. The scheduler checks the schedule against
max_message_bytes only for a chained call (scheduler/chains.oversized): a call whose schedule
is over the limit is published anyway, and the broker closes the scheduler's session.

And a call whose schedule fits, by less than the 4 KiB dags._too_large leaves for a trigger's
envelope, used to run: 4db4be0 fails it, blaming a step's result of a few bytes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.errors import BrokerError
from droplet.proto import envelope, pb
from droplet.store import serializer

from .inprocess import SETTINGS, Fleet
from .test_poison_refused_later import BROKER_MAX_MESSAGE_BYTES, broker_that_refuses_later, drive


def f(lib: Any, blob: bytes, n: int) -> int:
    return n


def g(lib: Any, n: int) -> int:
    return n


def _call(fleet: Fleet, slack: int) -> pb.GenericResponse:
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("f", f)
    fleet.register("g", g)
    dag = pb.Dag(name="d", functions=["f", "g"])
    dag.connections.add(source="f", sink="g")
    fleet.pin(dag, {"f": "w1", "g": "w2"})
    call = pb.DagCall(name="d", call_id="c-1", response_address=fleet.reply_to)
    serializer.dump(b"", call.function_args["f"].values.add())
    serializer.dump(1, call.function_args["f"].values.add())
    base = call.ByteSize()
    call.function_args["f"].values[0].Clear()
    serializer.dump(b"a" * (BROKER_MAX_MESSAGE_BYTES - slack - base - 8),
                    call.function_args["f"].values[0])
    assert call.ByteSize() <= BROKER_MAX_MESSAGE_BYTES - slack + 8, "what the client accepts"
    fleet.client.publish(fleet.names.calls,
                         envelope.encode([pb.Message(dag_call=call)], fleet.signer),
                         reply_to=fleet.reply_to)
    try:
        faults = drive(fleet, 10)
    except BrokerError as exc:
        pytest.fail(f"the scheduler's session was closed by the broker: {exc}")
    assert faults == 0, f"{faults} worker sessions closed by the broker"
    fleet.answers()
    responses = [r for r in fleet.replies if r.call_id == "c-1"]
    assert responses, "the DAG call was never answered"
    return responses[0]


def test_a_schedule_over_max_message_bytes_is_refused_by_the_scheduler_not_published(
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    response = _call(fleet, 100)  # the call fits, its schedule does not
    assert not response.success and response.error == pb.INVALID_REQUEST
    assert "max_message_bytes" in response.message


def test_a_small_result_of_a_call_whose_schedule_fits_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    response = _call(fleet, 2500)  # every message of this call fits, with ~2 KiB to spare
    assert response.success, response.message
