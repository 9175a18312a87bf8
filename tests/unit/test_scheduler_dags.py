"""Seed behaviours of DAG creation, deletion and calls in the scheduler, driven directly."""

from __future__ import annotations

import random

import pytest

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import dags
from droplet.store.memory import MemoryKV

from .helpers import NAMES, RecordingPins, linear_dag, metadata, scheduler_state


def exists(name: str) -> bool:
    return True


def test_create_dag_pins_each_function_on_a_distinct_free_worker() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")
    pins = RecordingPins([True, True])
    dag = linear_dag("dag", ["source", "sink"])

    response = dags.create_dag(dag, state, md, pins, exists)

    assert response.success
    assert {p[2] for p in pins.pinned} == {"source", "sink"}
    assert {p[0] for p in pins.pinned} == {"w1", "w2"}, "distinct workers"
    assert state.free_workers() == []
    assert state.dag_locations("dag").keys() == {"source", "sink"}
    # Persisted in etcd: the DAG (ready) and one pin record per worker.
    record = md.get_dag("dag")
    assert record is not None and record.ready and record.dag == dag
    assert sorted((p.worker_id, p.function_name) for p in md.pins()) == sorted(
        (p[0], p[2]) for p in pins.pinned
    )
    assert pins.unpinned == []


def test_create_dag_already_exists_changes_nothing() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")
    dag = linear_dag("dag", ["source", "sink"])
    assert dags.create_dag(dag, state, md, RecordingPins([True, True]), exists).success
    before = kv.get_prefix(md.keys.prefix)[0]
    state.workers["w3"] = pb.WorkerStatus(id="w3")
    pins = RecordingPins([True, True])

    response = dags.create_dag(dag, state, md, pins, exists)

    assert not response.success
    assert response.error == pb.DAG_ALREADY_EXISTS
    assert pins.pinned == [] and pins.unpinned == []
    assert kv.get_prefix(md.keys.prefix)[0] == before
    assert state.free_workers() == ["w3"]


def test_create_dag_insufficient_resources_rolls_back() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1")
    pins = RecordingPins([True])
    before = kv.get_prefix(md.keys.prefix)[0]

    response = dags.create_dag(linear_dag("dag", ["source", "sink"]), state, md, pins, exists)

    assert not response.success
    assert response.error == pb.NO_RESOURCES
    assert pins.pinned == [("w1", "dag", "source")]
    assert pins.unpinned == [("w1", "dag", "source")], "what was pinned is unpinned"
    assert kv.get_prefix(md.keys.prefix)[0] == before, "metadata exactly as before"
    assert state.pins == {} and state.dags == {}
    assert state.free_workers() == ["w1"]


def test_a_rejected_pin_moves_on_to_another_free_worker() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2", "w3")
    pins = RecordingPins([False, True, True])

    response = dags.create_dag(
        linear_dag("dag", ["a", "b"]), state, md, pins, exists, rng=random.Random(1)
    )

    assert response.success
    assert len(pins.pinned) == 3
    rejected_worker = pins.pinned[0][0]
    assert rejected_worker not in state.pins, "the rejecting worker holds no pin"
    assert len({p.worker_id for p in md.pins()}) == 2


def test_register_dag_refuses_an_unregistered_function() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")
    pins = RecordingPins([True, True])

    response = dags.create_dag(
        linear_dag("dag", ["known", "unknown"]), state, md, pins, lambda n: n == "known"
    )

    assert response.error == pb.FUNC_NOT_FOUND
    assert pins.pinned == [] and md.get_dag("dag") is None


@pytest.mark.parametrize(
    ("functions", "connections", "why"),
    [
        (["a", "b"], [("a", "b"), ("b", "a")], "cycle"),
        (["a"], [("a", "zz")], "outside"),
        (["a", "a"], [], "once"),
        ([], [], "at least one"),
        (["a", "b"], [("a", "b"), ("a", "b")], "twice"),
    ],
)
def test_malformed_dags_are_refused(
    functions: list[str], connections: list[tuple[str, str]], why: str
) -> None:
    dag = pb.Dag(name="bad", functions=functions)
    for s, t in connections:
        dag.connections.add(source=s, sink=t)
    kv = MemoryKV()
    response = dags.create_dag(dag, scheduler_state("w1", "w2"), metadata(kv), RecordingPins(),
                               exists)
    assert response.error == pb.INVALID_REQUEST
    assert why in response.message


def test_delete_dag_unpins_every_function_and_clears_metadata() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")
    assert dags.create_dag(linear_dag("dag", ["source", "sink"]), state, md,
                           RecordingPins([True, True]), exists).success
    pins = RecordingPins()

    response = dags.delete_dag("dag", state, md, pins)

    assert response.success
    assert sorted(p[2] for p in pins.unpinned) == ["sink", "source"]
    assert {p[0] for p in pins.unpinned} == {"w1", "w2"}
    assert md.get_dag("dag") is None and md.pins() == []
    assert state.dags == {} and state.pins == {}
    assert state.free_workers() == ["w1", "w2"], "freed workers take new pins at once"


def test_delete_nonexistent_dag_changes_nothing() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state()
    pins = RecordingPins()

    response = dags.delete_dag("dag", state, md, pins)

    assert not response.success
    assert response.error == pb.NO_SUCH_DAG
    assert pins.unpinned == [] and kv.get_prefix(md.keys.prefix)[0] == {}


def _ready_dag_state(dag: pb.Dag) -> tuple[MemoryKV, object]:
    kv = MemoryKV()
    state = scheduler_state(*[f"w-{f}" for f in dag.functions])
    pins = RecordingPins([True] * len(dag.functions))
    assert dags.create_dag(dag, state, metadata(kv), pins, exists).success
    return kv, state


def test_call_dag_sends_begin_triggers_and_no_notices_to_pinned_workers() -> None:
    dag = linear_dag("dag", ["source", "sink"])
    _, state = _ready_dag_state(dag)
    out = Outbox()
    call = pb.DagCall(name="dag", call_id="sched-1")
    call.function_args["source"].values.add(type=pb.PICKLE, body=b"\x80\x05K\x01.")

    response = dags.call_dag(call, "reply-addr", state, out, now=1.0)  # type: ignore[arg-type]

    assert response.success and response.response_id == "sched-1"
    locations = state.dag_locations("dag")  # type: ignore[attr-defined]
    schedules = [o for o in out.sent if o.message.WhichOneof("kind") == "schedule"]
    triggers = [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    assert schedules == [], "pinned workers loaded their functions when pinned: no notices"
    schedule = triggers[0].message.trigger.schedule
    assert schedule.id and schedule.id != "sched-1", "each scheduling has its own id"
    assert triggers[0].queue == NAMES.worker(locations["source"])
    assert schedule.call_id == "sched-1"
    assert schedule.response_address == "reply-addr"
    assert dict(schedule.locations) == locations
    assert len(schedule.arguments["source"].values) == 1
    assert len(triggers) == 1
    trigger = triggers[0].message.trigger
    schedule_id = schedule.id
    assert (trigger.id, trigger.source, trigger.target_function) == (schedule_id, "BEGIN", "source")
    assert triggers[0].queue == NAMES.worker(locations["source"])
    assert trigger.schedule.id == schedule_id, "the trigger carries the whole schedule"
    assert dict(trigger.schedule.locations) == locations


def test_call_dag_answers_with_the_output_key() -> None:
    _, state = _ready_dag_state(linear_dag("dag", ["a", "b"]))
    response = dags.call_dag(pb.DagCall(name="dag", output_key="out"), None, state, Outbox())  # type: ignore[arg-type]
    assert response.response_id == "out"


def test_call_unknown_dag_answers_no_such_dag() -> None:
    out = Outbox()
    response = dags.call_dag(pb.DagCall(name="nope", call_id="c"), "addr", scheduler_state(), out)
    assert response.error == pb.NO_SUCH_DAG
    assert out.sent == []
    [answer] = out.responses_to("addr")
    assert answer.call_id == "c" and answer.error == pb.NO_SUCH_DAG
    [outcome] = out.outcomes()
    assert outcome.call_id == "c", "the failure is the call's stored outcome"


def test_a_call_of_a_dag_with_a_dead_worker_waits_for_the_pin_then_answers_no_resources() -> None:
    """As a trigger whose step lost its worker does (reroute): the fleet moves a dead worker's
    pin within seconds, and a call sent while the DAG was whole must not fail meanwhile
    (tests/attack/test_e2e_dag_calls_queued_while_a_pinned_worker_dies.py)."""
    _, state = _ready_dag_state(linear_dag("dag", ["a", "b"]))
    state.workers.pop("w-b")  # type: ignore[attr-defined]
    out = Outbox()
    response = dags.call_dag(pb.DagCall(name="dag", call_id="c"), "addr", state, out,  # type: ignore[arg-type]
                             now=100.0)
    assert response.success and out.responses_to("addr") == [] and out.outcomes() == []
    [waiting] = out.sent
    assert waiting.queue == NAMES.retry(dags.REROUTE_DELAY_MS)
    parked = waiting.message.dag_call
    assert (parked.call_id, parked.response_address, parked.unplaced_since) == ("c", "addr", 100.0)

    again = Outbox()  # handed back by the delay queue (no reply_to), still unplaced
    assert dags.call_dag(parked, None, state, again, now=130.0).success  # type: ignore[arg-type]
    assert again.sent[0].message.dag_call.unplaced_since == 100.0, "measured from the first"

    given_up = Outbox()
    response = dags.call_dag(parked, None, state, given_up,  # type: ignore[arg-type]
                             now=100.0 + dags.REROUTE_DEADLINE_S)
    assert response.error == pb.NO_RESOURCES
    assert given_up.sent == [] and given_up.responses_to("addr")[0].error == pb.NO_RESOURCES


def test_a_redelivered_create_gets_the_same_answer() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")
    dag = linear_dag("dag", ["a", "b"])
    assert dags.create_dag(dag, state, md, RecordingPins([True, True]), exists,
                           request_id="req-1").success
    pins = RecordingPins()
    again = dags.create_dag(dag, state, md, pins, exists, request_id="req-1")
    assert again.success, "the same request: the same answer, not DAG_ALREADY_EXISTS"
    assert pins.pinned == [] and pins.unpinned == []
    other = dags.create_dag(dag, state, md, RecordingPins(), exists, request_id="req-2")
    assert other.error == pb.DAG_ALREADY_EXISTS


def test_a_create_whose_scheduler_died_mid_way_is_taken_over() -> None:
    """Scheduler 1 claimed the name (under its lease) and pinned one function, then died;
    its request comes back to scheduler 2, which waits for the half-made DAG to vanish with
    the lease, releases the orphaned pin's worker through healing, and creates the DAG."""
    kv = MemoryKV()
    md = metadata(kv)
    dag = linear_dag("dag", ["a", "b"])
    lease = kv.grant_lease(10)
    assert md.create_dag(dag, "sched-1", "req-1", lease.id) is not None
    assert md.claim_pin("w1", "dag", "a")
    state = scheduler_state("w1", "w2", "w3")
    state.scheduler_id = "sched-2"
    state.pins["w1"] = pb.PinRecord(dag_name="dag", function_name="a", worker_id="w1")
    pins = RecordingPins([True, True])
    pins.on_wait = lambda: kv.expire_lease(lease.id)

    response = dags.create_dag(dag, state, md, pins, exists, request_id="req-1", wait_s=30)

    assert response.success
    assert pins.waited > 0, "it waited for the half-made DAG instead of answering at once"
    assert ("w1", "dag", "a") in pins.unpinned, "the dead attempt's pin was undone"
    assert sorted(p.function_name for p in md.pins()) == ["a", "b"]
    assert len({p.worker_id for p in md.pins()}) == 2
    record = md.get_dag("dag")
    assert record is not None and record.ready


def test_a_create_that_cannot_finish_unpins_what_it_pinned_on_every_path() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")

    class Failing(RecordingPins):
        def pin(self, worker_id: str, dag_name: str, function_name: str) -> bool:
            if self.pinned:
                raise RuntimeError("the broker went away")
            return super().pin(worker_id, dag_name, function_name)

    pins = Failing([True])
    with pytest.raises(RuntimeError):
        dags.create_dag(linear_dag("dag", ["a", "b"]), state, md, pins, exists)
    assert [p[2] for p in pins.unpinned] == ["a"]
    assert md.get_dag("dag") is None and md.pins() == []


def test_a_dag_deleted_while_being_created_is_not_brought_back() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    state = scheduler_state("w1", "w2")

    class Deleting(RecordingPins):
        def pin(self, worker_id: str, dag_name: str, function_name: str) -> bool:
            md.delete_dag(dag_name)  # a concurrent delete_dag
            return super().pin(worker_id, dag_name, function_name)

    response = dags.create_dag(linear_dag("dag", ["a", "b"]), state, md, Deleting([True, True]),
                               exists)
    assert not response.success
    assert md.get_dag("dag") is None and md.pins() == []


def test_a_trigger_for_a_dead_worker_goes_where_the_step_is_pinned_now() -> None:
    dag = linear_dag("dag", ["a", "b"])
    _, state = _ready_dag_state(dag)
    schedule = pb.DagSchedule(id="s", call_id="c", start_time=100.0)
    schedule.dag.CopyFrom(dag)
    schedule.locations["a"], schedule.locations["b"] = "w-a", "dead"
    trigger = pb.DagTrigger(id="s", source="a", target_function="b")
    trigger.schedule.CopyFrom(schedule)
    out = Outbox()
    dags.reroute(trigger, state, out, now=101.0)  # type: ignore[arg-type]
    [moved] = out.sent
    holder = state.dag_locations("dag")["b"]  # type: ignore[attr-defined]
    assert moved.queue == NAMES.worker(holder)
    assert moved.message.trigger.schedule.locations["b"] == holder

    state.workers.pop(holder)  # type: ignore[attr-defined]
    later = Outbox()
    dags.reroute(trigger, state, later, now=101.0)  # type: ignore[arg-type]
    [waiting] = later.sent
    assert waiting.queue == NAMES.retry(dags.REROUTE_DELAY_MS)
    assert waiting.message.trigger.rerouted_since == 101.0
    given_up = Outbox()
    dags.reroute(waiting.message.trigger, state, given_up,  # type: ignore[arg-type]
                 now=101.0 + dags.REROUTE_DEADLINE_S + 1)
    [outcome] = given_up.outcomes()
    assert outcome.call_id == "c" and outcome.value.type == pb.ERROR
