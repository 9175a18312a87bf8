"""A chain's next DAG call carrying a result over max_message_bytes is not published.

The last step of a DAG call with continuations sends the scheduler the next DagCall with its
result as `chained_input` (worker/chains.next_call). The scheduler checks such a call against
max_message_bytes (scheduler/chains.oversized), but only once it has it: the worker publishes
it whatever its size, and dags._too_large (4db4be0) skips a final step. Over the broker's
max_message_size, the broker refuses it by closing the worker's channel after the step was
acked, on every run of it, and the caller is never answered.
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
                                            (BROKER_MAX_MESSAGE_BYTES // 4, True)])
def test_a_chained_result_over_max_message_bytes_fails_the_call_before_it_is_sent(
        monkeypatch: pytest.MonkeyPatch, size: int, fits: bool) -> None:
    RUNS.clear()
    broker_that_refuses_later(monkeypatch)
    fleet = Fleet(settings=replace(SETTINGS, max_message_bytes=BROKER_MAX_MESSAGE_BYTES))
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("big", big)
    fleet.register("after", after)
    fleet.pin(pb.Dag(name="first", functions=["big"]), {"big": "w1"})
    fleet.pin(pb.Dag(name="second", functions=["after"]), {"after": "w2"})
    call_id = fleet.call_dag("first", {"big": [size]},
                             continuations=[pb.Continuation(dag="second")])

    faults = drive(fleet, 10)

    assert faults == 0, f"{faults} sessions closed by the broker, the step run {len(RUNS)} times"
    assert len(RUNS) == 1
    fleet.answers()
    responses = [r for r in fleet.replies if r.call_id == call_id]
    assert responses, "the chained call was never answered"
    if fits:
        assert responses[0].success, responses[0].message
    else:
        assert not responses[0].success and responses[0].error == pb.INVALID_REQUEST
        assert "max_message_bytes" in responses[0].message
