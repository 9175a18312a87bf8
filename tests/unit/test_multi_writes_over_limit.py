"""A MULTI DAG step's writes travel on in its trigger: over max_message_bytes, they fail the call.

A MULTI call's writes are committed by its last step, in one transaction: each step's writes
go on to the next step inside its trigger (`DagTrigger.writes`, dags._done_record).
dags._too_large (4db4be0) counts the step's result and the schedule, not its writes: a step
that writes a value larger than max_message_bytes (the store takes it: etcd's limit is
larger) and returns a small result sends a trigger the broker refuses by closing the worker's
channel after the step was acked, on every run of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.proto import pb

from .inprocess import SETTINGS, Fleet
from .test_poison_refused_later import BROKER_MAX_MESSAGE_BYTES, broker_that_refuses_later, drive

RUNS: list[str] = []


def writer(lib: Any, size: int) -> int:
    RUNS.append(lib.getid())
    lib.put("blob", b"w" * size)
    return size


def after(lib: Any, size: int) -> int:
    return size


@pytest.mark.parametrize(("size", "fits"), [(BROKER_MAX_MESSAGE_BYTES + 1, False),
                                            (BROKER_MAX_MESSAGE_BYTES // 4, True)])
def test_a_multi_steps_writes_over_max_message_bytes_fail_the_call_before_they_are_sent(
        monkeypatch: pytest.MonkeyPatch, size: int, fits: bool) -> None:
    RUNS.clear()
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("writer", writer)
    fleet.register("after", after)
    dag = pb.Dag(name="d", functions=["writer", "after"])
    dag.connections.add(source="writer", sink="after")
    fleet.pin(dag, {"writer": "w1", "after": "w2"})
    call_id = fleet.call_dag("d", {"writer": [size]}, consistency=pb.MULTI)

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
        assert "max_message_bytes" in responses[0].message
