"""Fleet healing, driven directly: pins move off dead workers, orphans are settled."""

from __future__ import annotations

import random

from droplet.proto import pb
from droplet.scheduler import dags, healing
from droplet.store.memory import MemoryKV

from .helpers import RecordingPins, linear_dag, metadata, scheduler_state


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


def test_a_half_made_dag_of_a_dead_scheduler_vanishes_and_its_pins_are_released() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    lease = kv.grant_lease(10)
    assert md.create_dag(linear_dag("orphan", ["a"]), "gone-scheduler", "req", lease.id)
    assert md.claim_pin("w1", "orphan", "a")
    kv.expire_lease(lease.id)  # the creating scheduler died
    state = scheduler_state("w1")
    state.pins["w1"] = pb.PinRecord(dag_name="orphan", function_name="a", worker_id="w1")
    pins = RecordingPins()

    healing.heal_pins(state, md, pins)

    assert md.get_dag("orphan") is None and md.pins() == []
    assert pins.unpinned == [("w1", "orphan", "a")]
    assert state.free_workers() == ["w1"]


def test_two_schedulers_healing_at_once_pin_a_function_once() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    first = _pinned_dag(kv, ["w1", "w2", "w3", "w4"])
    dead = first.dag_locations("dag")["a"]  # type: ignore[attr-defined]
    second = scheduler_state(*[w for w in ["w1", "w2", "w3", "w4"] if w != dead])
    second.dags = dict(first.dags)  # type: ignore[attr-defined]
    second.pins = dict(first.pins)  # type: ignore[attr-defined]
    first.workers.pop(dead)  # type: ignore[attr-defined]

    healing.heal_pins(first, md, RecordingPins([True, True]))  # type: ignore[arg-type]
    second.pins.pop(dead)  # its view of the release arrives, but not yet the new pin
    healing.heal_pins(second, md, RecordingPins([True, True]))  # type: ignore[arg-type]

    holders = [p.worker_id for p in md.pins() if p.function_name == "a"]
    assert len(holders) == 1, f"function a pinned on {holders}"
