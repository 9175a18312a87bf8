"""A DAG step whose result is too large for the trigger that carries it on fails its call.

A step's result travels to the next step inside a trigger (with the call's schedule). Over
max_message_bytes (RabbitMQ 4 and Droplet both default to 16 MiB), the broker refuses the
trigger by closing the worker's channel after the step was acked, on every run of it: the
session ends again and again until the poison count dead-letters the step (found by an attack
on the poison count, branch attack-4). The step's outcome is INVALID_REQUEST instead, as for a
chained DAG call's result over the limit, and no session ends.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.proto import pb

from .inprocess import SETTINGS, Fleet
from .test_poison_refused_later import BROKER_MAX_MESSAGE_BYTES, broker_that_refuses_later, drive

RUNS: list[str] = []


def big(lib: Any, size: int) -> bytes:
    RUNS.append(lib.getid())
    return b"r" * size


def after(lib: Any, blob: bytes) -> int:
    return len(blob)


@pytest.mark.parametrize(("size", "fits"), [(BROKER_MAX_MESSAGE_BYTES + 1, False),
                                            (BROKER_MAX_MESSAGE_BYTES // 2, True)])
def test_a_step_result_over_max_message_bytes_fails_the_call_before_it_is_sent(
        monkeypatch: pytest.MonkeyPatch, size: int, fits: bool) -> None:
    RUNS.clear()
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("big", big)
    fleet.register("after", after)
    dag = pb.Dag(name="d", functions=["big", "after"])
    dag.connections.add(source="big", sink="after")
    fleet.pin(dag, {"big": "w1", "after": "w2"})
    call_id = fleet.call_dag("d", {"big": [size]})

    faults = drive(fleet, 10)

    assert faults == 0, f"{faults} sessions closed by the broker, the step run {len(RUNS)} times"
    assert len(RUNS) == 1
    fleet.answers()
    responses = [r for r in fleet.replies if r.call_id == call_id]
    assert responses, "the DAG call was never answered"
    if fits:
        assert responses[0].success, responses[0].message
    else:
        assert not responses[0].success and responses[0].error == pb.INVALID_REQUEST
        assert "'big'" in responses[0].message and "max_message_bytes" in responses[0].message
