"""Fleet healing, driven directly: pins move off dead workers, orphans are settled."""

from __future__ import annotations

import random

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import dags, healing
from droplet.store import serializer
from droplet.store.memory import MemoryKV

from .helpers import NAMES, RecordingPins, function_call, linear_dag, metadata, scheduler_state


def _pinned_dag(kv: MemoryKV, workers: list[str]) -> object:
    state = scheduler_state(*workers)
    md = metadata(kv)
    assert dags.create_dag(linear_dag("dag", ["a", "b"]), state, md,
                           RecordingPins([True, True]), lambda _: True,
                           rng=random.Random(0)).success
    return state


def test_a_dead_workers_pin_moves_to_a_free_worker() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = _pinned_dag(kv, ["w1", "w2", "w3"])
    holder_of_a = state.dag_locations("dag")["a"]  # type: ignore[attr-defined]
    state.workers.pop(holder_of_a)  # type: ignore[attr-defined]
    pins = RecordingPins([True])

    actions = healing.heal_pins(state, md, pins)  # type: ignore[arg-type]

    assert any("released dag/a" in a for a in actions)
    assert any("pinned dag/a" in a for a in actions)
    locations = state.dag_locations("dag")  # type: ignore[attr-defined]
    assert set(locations) == {"a", "b"} and holder_of_a not in locations.values()
    assert {p.worker_id for p in md.pins()} == set(locations.values())


def test_without_a_free_worker_the_function_stays_unplaced_until_one_comes() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = _pinned_dag(kv, ["w1", "w2"])
    dead = state.dag_locations("dag")["b"]  # type: ignore[attr-defined]
    state.workers.pop(dead)  # type: ignore[attr-defined]

    healing.heal_pins(state, md, RecordingPins())  # type: ignore[arg-type]
    assert healing.unplaced_functions(state) == [("dag", "b")]  # type: ignore[arg-type]

    state.workers["w9"] = pb.WorkerStatus(id="w9")  # type: ignore[attr-defined]
    healing.heal_pins(state, md, RecordingPins([True]))  # type: ignore[arg-type]
    assert state.dag_locations("dag")["b"] == "w9"  # type: ignore[attr-defined]


def test_a_half_created_dag_of_a_dead_scheduler_is_cleared() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1")
    state.scheduler_id = "me"
    assert md.create_dag(linear_dag("orphan", ["a"]), creator="gone-scheduler")
    state.dags["orphan"] = md.get_dag("orphan")  # type: ignore[assignment]

    healing.heal_pins(state, md, RecordingPins())

    assert md.get_dag("orphan") is None and "orphan" not in state.dags


def test_a_redelivered_create_takes_over_a_dead_creators_half_made_dag() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")
    state.scheduler_id = "me"
    assert md.create_dag(linear_dag("dag", ["a", "b"]), creator="crashed")

    response = dags.create_dag(linear_dag("dag", ["a", "b"]), state, md,
                               RecordingPins([True, True]), lambda _: True)

    assert response.success


def test_orphaned_calls_are_placed_again_and_dag_messages_fail_once() -> None:
    state = scheduler_state("w-alive")
    out = Outbox()
    failed: set[str] = set()
    call = function_call("f", [1])
    call.response_address = "client-a"
    schedule = pb.DagSchedule(id="s", call_id="c1", response_address="client-b")
    trigger = pb.DagTrigger(id="s", source="x", target_function="y",
                            call=pb.CallRef(call_id="c1", response_address="client-b"))

    for message in (pb.Message(call=call), pb.Message(schedule=schedule),
                    pb.Message(trigger=trigger), pb.Message(unpin=pb.UnpinRequest())):
        healing.handle_orphan(message, state, out, failed, "w-dead")

    [replaced] = out.messages_to(NAMES.work)
    assert replaced.call.response_address == "client-a"
    [failure] = out.messages_to("client-b")
    assert failure.response.error == pb.WORKER_LOST
    assert failure.response.call_id == "c1"
    [stored] = out.results
    assert stored.key == "c1" and serializer.load(stored.value).code == pb.WORKER_LOST
