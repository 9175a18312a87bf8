"""Batches in a whole worker, over the stub broker and MemoryKV (see inprocess.py): calls that
arrive in separate deliveries are gathered into one invocation, each is answered with its own
stored outcome and acked; a worker that dies mid-batch leaves every call one outcome."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import cloudpickle
import pytest

from droplet.errors import BrokerError, StoreError
from droplet.proto import envelope, pb
from droplet.store import serializer
from droplet.store.metadata import Metadata
from droplet.worker import batching

from .inprocess import Fleet
from .test_inprocess_faults import assert_one_outcome_each

BATCHES: list[int] = []  # module level: pickled by reference, so the workers append here
RUNS: Counter[int] = Counter()


def tripled(lib: Any, batch: list[tuple[int]]) -> list[int]:
    BATCHES.append(len(batch))
    for (x,) in batch:
        RUNS[x] += 1
    return [x * 3 for (x,) in batch]


def _batching_fleet(*workers: str, size: int = 16, told: bool = True) -> Fleet:
    BATCHES.clear()
    RUNS.clear()
    fleet = Fleet()
    for worker in workers:
        fleet.start_worker(worker)
    Metadata(fleet.kv, fleet.settings, fleet.signer).put_function(pb.Function(
        name="b", body=cloudpickle.dumps(tripled), batching=True, batch_size=size,
        batch_linger_s=0.001))
    for member in fleet.workers.values():
        if told:
            member.service.state.batching.add("b")  # what its functions mirror would tell it
    return fleet


def test_calls_in_separate_deliveries_run_in_one_invocation_and_each_is_answered() -> None:
    fleet = _batching_fleet("w1")
    own = fleet.names.worker("w1")
    calls = [fleet.call("b", i, queue=own) for i in range(5)]
    fleet.step("w1")
    assert BATCHES == [5], "five deliveries, one invocation"
    fleet.run_until_quiet()
    assert BATCHES == [5]
    assert [fleet.stored(c) for c in calls] == [0, 3, 6, 9, 12]
    assert_one_outcome_each(fleet, calls)


def test_a_worker_not_yet_told_that_a_function_batches_still_batches_its_calls() -> None:
    """Its functions mirror lags the registration (a loaded CI machine): the calls the
    scheduler places are marked, so the first ones batch too, not only those after the first
    run (in CI, every call of one envelope once ran alone)."""
    fleet = _batching_fleet("w1", told=False)
    fleet.start_scheduler()
    calls = [pb.FunctionCall(name="b", call_id=f"c{i}", response_key=f"c{i}",
                             response_address=fleet.reply_to, batching=True) for i in range(5)]
    for i, call in enumerate(calls):
        serializer.dump(i, call.arguments.values.add())
    fleet.client.publish(fleet.names.calls, envelope.encode(
        [pb.Message(call=c) for c in calls], fleet.signer), reply_to=fleet.reply_to)
    assert fleet.schedule() == 1
    assert fleet.workers["w1"].service.state.batching == set()
    fleet.step("w1")
    assert BATCHES == [5], "one envelope of five calls, one invocation"
    fleet.run_until_quiet()
    assert [fleet.stored(c.call_id) for c in calls] == [0, 3, 6, 9, 12]
    assert_one_outcome_each(fleet, [c.call_id for c in calls])


def test_a_batch_takes_at_most_its_size_and_the_rest_waits_for_the_next() -> None:
    fleet = _batching_fleet("w1", size=3)
    own = fleet.names.worker("w1")
    calls = [fleet.call("b", i, queue=own) for i in range(7)]
    fleet.run_until_quiet()
    assert BATCHES == [3, 3, 1]
    assert_one_outcome_each(fleet, calls)


def test_a_worker_dying_mid_batch_leaves_every_call_one_outcome() -> None:
    fleet = _batching_fleet("w1", "w2")
    member = fleet.workers["w1"]
    own = fleet.names.worker("w1")
    calls = [fleet.call("b", i, queue=own) for i in range(4)]

    def crash_on_ack(tag: int, multiple: bool = False) -> None:
        raise BrokerError("the process died here")

    member.conn.ack = crash_on_ack  # type: ignore[method-assign]
    with contextlib.suppress(BrokerError):
        fleet.step("w1")  # the batch ran, the first outcome was stored, then the crash
    assert BATCHES == [4]
    fleet.crash("w1")
    fleet.start_worker("w1").service.state.batching.add("b")  # the same id, a new process
    fleet.run_until_quiet()
    assert_one_outcome_each(fleet, calls)
    assert [fleet.stored(c) for c in calls] == [0, 3, 6, 9]
    # Copies that may have run go alone, after looking up their outcome: the one stored
    # before the crash is answered, not run again.
    assert RUNS[0] == 1 and all(RUNS[i] == 2 for i in (1, 2, 3)), RUNS
    assert BATCHES[1:] == [1, 1, 1]


def test_a_batch_that_cannot_be_gathered_leaves_its_calls_to_run_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = _batching_fleet("w1")
    calls = [fleet.call("b", i, queue=fleet.names.worker("w1")) for i in range(3)]

    def etcd_away(*_args: Any) -> None:
        raise StoreError("etcd is away")

    monkeypatch.setattr(batching.Gathering, "run", etcd_away)
    fleet.run_until_quiet()
    assert BATCHES == [1, 1, 1], "each alone, as a batch of one"
    assert_one_outcome_each(fleet, calls)
