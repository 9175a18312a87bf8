"""Attack on x-droplet-batching (cycle.py publish, envelope.batches, worker/service.py
serve_once): a worker gathers a batch from a marked delivery before its functions mirror has
told it that the function batches. Over the in-process fleet (stub broker, MemoryKV).

* A DAG step of a function *registered* with batching=True (the DAG not listing it in
  batching_functions) went unmarked: envelope.batches looked only at the DAG's list, so an
  untold worker ran such steps one by one, the race the header was made to close.
* A forged header on calls of a function that does not batch, a marked delivery mixing
  functions, and a marked one that does not verify (signing on) must change nothing.
Run: .venv/bin/python -m pytest -q tests/attack/test_batching_header_edges.py
"""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest

from droplet.broker_config.names import BATCHING_HEADER
from droplet.proto import envelope, pb
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.metadata import Metadata
from tests.unit.inprocess import SETTINGS, Fleet
from tests.unit.test_inprocess_batching import BATCHES, _batching_fleet, tripled
from tests.unit.test_inprocess_faults import assert_one_outcome_each

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("told", [True, False])
def test_dag_steps_of_a_registered_batching_function_batch_on_an_untold_worker(
        told: bool) -> None:
    fleet = _batching_fleet("w1", told=told)
    fleet.start_scheduler()
    fleet.pin(pb.Dag(name="d", functions=["b"]), {"b": "w1"})
    calls = [fleet.call_dag("d", {"b": [i]}) for i in range(5)]
    assert fleet.schedule() == 5
    fleet.step("w1")
    assert BATCHES == [5], "five steps, one invocation"
    fleet.run_until_quiet()
    assert [fleet.stored(c) for c in calls] == [0, 3, 6, 9, 12]
    assert_one_outcome_each(fleet, calls)


def _marked_calls(fleet: Fleet, names: list[str], signer: Signer | None = None) -> list[str]:
    """One marked envelope of calls (name, argument index) on w1's own queue."""
    calls = []
    for i, name in enumerate(names):
        call = pb.FunctionCall(name=name, call_id=f"{name}{i}", response_key=f"{name}{i}",
                               response_address=fleet.reply_to)
        serializer.dump(i, call.arguments.values.add())
        calls.append(call)
    fleet.client.publish(fleet.names.worker("w1"), envelope.encode(
        [pb.Message(call=c) for c in calls], signer or fleet.signer),
        reply_to=fleet.reply_to, headers={BATCHING_HEADER: 1})
    return [c.call_id for c in calls]


def _plain(lib: Any, x: int) -> int:
    return x + 100


def test_a_forged_header_on_calls_that_do_not_batch_changes_nothing() -> None:
    fleet = _batching_fleet("w1", told=False)
    fleet.register("plain", _plain)
    calls = _marked_calls(fleet, ["plain"] * 3)
    fleet.run_until_quiet()
    assert BATCHES == []
    assert fleet.workers["w1"].service.state.batching == set()
    assert [fleet.stored(c) for c in calls] == [100, 101, 102]
    assert_one_outcome_each(fleet, calls)


def test_a_marked_delivery_mixing_functions_batches_only_the_batching_ones() -> None:
    fleet = _batching_fleet("w1", told=False)
    fleet.register("plain", _plain)
    calls = _marked_calls(fleet, ["b", "plain", "b", "plain", "b"])
    fleet.run_until_quiet()
    assert BATCHES == [3]
    assert [fleet.stored(c) for c in calls] == [0, 101, 6, 103, 12]
    assert_one_outcome_each(fleet, calls)


def test_a_marked_delivery_that_does_not_verify_runs_nothing() -> None:
    BATCHES.clear()
    fleet = Fleet(settings=SETTINGS.with_(signing_key="the fleet's key"))
    fleet.start_worker("w1")
    Metadata(fleet.kv, fleet.settings, fleet.signer).put_function(pb.Function(
        name="b", body=cloudpickle.dumps(tripled), batching=True, batch_size=16,
        batch_linger_s=0.001))
    calls = _marked_calls(fleet, ["b", "b"], signer=Signer("a forger's key"))
    fleet.run_until_quiet()
    assert BATCHES == []
    assert [fleet.stored(c) for c in calls] == [None, None]
