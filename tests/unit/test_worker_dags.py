"""The worker's DAG steps: triggers that carry their schedule, durable fan-in joins, argument
order, multi-sink results, failures, and steps that survive the worker that ran them."""

from __future__ import annotations

from typing import Any

from droplet.graph import BEGIN, OUTPUT
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.worker import dags
from droplet.worker.handlers import WorkerState

from .helpers import NAMES, SETTINGS, commit, create_function, metadata, worker_state


def dag_of(functions: list[str], edges: list[tuple[str, str]]) -> pb.Dag:
    dag = pb.Dag(name="d", functions=functions)
    for s, t in edges:
        dag.connections.add(source=s, sink=t)
    return dag


def schedule_of(dag: pb.Dag, args: dict[str, list[Any]] | None = None,
                sid: str = "s1") -> pb.DagSchedule:
    schedule = pb.DagSchedule(id=sid, call_id="call-1", response_address="client")
    schedule.dag.CopyFrom(dag)
    for f in dag.functions:
        schedule.locations[f] = f"w-{f}"
    for f, values in (args or {}).items():
        for v in values:
            serializer.dump(v, schedule.arguments[f].values.add())
    return schedule


def trigger(schedule: pb.DagSchedule, source: str, target: str, value: Any = None,
            aborted: bool = False) -> pb.DagTrigger:
    t = pb.DagTrigger(id=schedule.id, source=source, target_function=target, aborted=aborted)
    t.schedule.CopyFrom(schedule)
    if value is not None:
        serializer.dump(value, t.result)
    return t


def step(kv: MemoryKV, state: WorkerState, t: pb.DagTrigger) -> Outbox:
    """One trigger handled and its outbox committed, as the message cycle does."""
    out = Outbox()
    dags.on_trigger(t, state, out)
    commit(kv, out)
    return out


def test_a_source_runs_on_begin_and_triggers_its_downstream() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    state = worker_state(kv, "w-incr")
    schedule = schedule_of(dag_of(["incr", "square"], [("incr", "square")]), {"incr": [1]})
    notice = Outbox()

    dags.on_schedule(schedule, state, notice)
    assert notice.sent == [] and notice.durable == [], "a schedule is only notice"
    out = step(kv, state, trigger(schedule, BEGIN, "incr"))

    [sent] = out.sent
    assert sent.queue == NAMES.worker("w-square")
    t = sent.message.trigger
    assert (t.source, t.target_function) == ("incr", "square")
    assert serializer.load(t.result) == 2
    assert t.schedule.id == "s1", "the schedule travels with the trigger"
    assert kv.get_prefix(SETTINGS.etcd_prefix + "joins/")[0] == {}, "a chain keeps no state"


def test_fan_in_passes_own_arguments_then_upstream_results_in_connection_order() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, *args: list(args), "join")
    state = worker_state(kv, "w-join")
    schedule = schedule_of(dag_of(["b", "a", "join"], [("b", "join"), ("a", "join")]),
                           {"join": ["own"]})

    first = step(kv, state, trigger(schedule, "a", "join", "from-a"))
    assert first.sent == [] and first.replies == []
    step(kv, state, trigger(schedule, "a", "join", "duplicate-a"))  # a redelivery
    out = step(kv, state, trigger(schedule, "b", "join", "from-b"))

    [reply] = out.responses_to("client")
    assert serializer.load(reply.value) in (["own", "from-b", "from-a"],
                                            ["own", "from-b", "duplicate-a"])
    assert state.calls_total == 1
    joins, _ = kv.get_prefix(SETTINGS.etcd_prefix + "joins/s1/join/src/")
    assert joins == {}, "the partials are cleared with the outcome"


def test_a_join_survives_the_worker_that_held_half_of_it() -> None:
    """The partial is in etcd, not in memory: a fresh worker process (a restart under the same
    id, or the worker the step moved to) completes the join."""
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x, y: x + y, "add")
    schedule = schedule_of(dag_of(["x", "y", "add"], [("x", "add"), ("y", "add")]))
    step(kv, worker_state(kv, "w-add"), trigger(schedule, "x", "add", 40))
    reborn = worker_state(kv, "w-add")
    out = step(kv, reborn, trigger(schedule, "y", "add", 2))
    [reply] = out.responses_to("client")
    assert serializer.load(reply.value) == 42


def test_a_late_copy_of_the_last_trigger_sends_the_result_on_without_running_again() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    create_function(md, lambda _, x, y: x * y, "mul")
    dag = dag_of(["x", "y", "mul", "out"], [("x", "mul"), ("y", "mul"), ("mul", "out")])
    schedule = schedule_of(dag)
    state = worker_state(kv, "w-mul")
    step(kv, state, trigger(schedule, "x", "mul", 6))
    first = step(kv, state, trigger(schedule, "y", "mul", 7))
    again = step(kv, state, trigger(schedule, "y", "mul", 7))
    assert state.calls_total == 1, "it ran once"
    [sent] = first.messages_to(NAMES.worker("w-out"))
    [resent] = again.messages_to(NAMES.worker("w-out"))
    assert serializer.load(sent.trigger.result) == serializer.load(resent.trigger.result) == 42


def test_several_sinks_are_joined_into_a_dict_by_the_first_sinks_worker() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    create_function(md, lambda _, x: x * 2, "left")
    create_function(md, lambda _, x: x * 3, "right")
    schedule = schedule_of(dag_of(["src", "left", "right"], [("src", "left"), ("src", "right")]))
    collector = worker_state(kv, "w-left")
    other = worker_state(kv, "w-right")

    out_o = step(kv, other, trigger(schedule, "src", "right", 5))
    [to_collector] = out_o.sent
    assert to_collector.queue == NAMES.worker("w-left")
    assert to_collector.message.trigger.target_function == OUTPUT

    out_c = step(kv, collector, trigger(schedule, "src", "left", 5))
    [own] = out_c.messages_to(NAMES.worker("w-left"))  # its own result, through its queue
    step(kv, collector, own.trigger)
    final = step(kv, collector, to_collector.message.trigger)

    [reply] = final.responses_to("client")
    assert serializer.load(reply.value) == {"left": 10, "right": 15}


def test_a_failing_function_delivers_its_error_and_nothing_downstream_runs() -> None:
    kv = MemoryKV()
    md = metadata(kv)

    def broken(_: Any, x: Any) -> None:
        raise RuntimeError("node failed")

    create_function(md, broken, "first")
    create_function(md, lambda _, x: x, "second")
    schedule = schedule_of(dag_of(["first", "second"], [("first", "second")]), {"first": [1]})
    out = step(kv, worker_state(kv, "w-first"), trigger(schedule, BEGIN, "first"))

    [reply] = out.responses_to("client")
    assert reply.error == pb.EXECUTION_ERROR
    assert "node failed" in reply.message
    [abort] = out.messages_to(NAMES.worker("w-second"))
    assert abort.trigger.aborted

    downstream = worker_state(kv, "w-second")
    out2 = step(kv, downstream, abort.trigger)
    assert out2.sent == [] and out2.durable == [] and downstream.calls_total == 0


def test_an_upstream_result_that_cannot_be_loaded_fails_the_call_with_its_reason() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x, "second")
    schedule = schedule_of(dag_of(["first", "second"], [("first", "second")]))
    broken = trigger(schedule, "first", "second")
    broken.result.type = pb.CLOUDPICKLE
    broken.result.body = b"\x80\x05not a pickle"
    state = worker_state(kv, "w-second")
    out = step(kv, state, broken)
    [reply] = out.responses_to("client")
    assert reply.error == pb.EXECUTION_ERROR
    assert "cannot load an upstream result" in reply.message
    assert state.calls_total == 0


def test_join_records_live_under_a_lease() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x, y: x + y, "add")
    schedule = schedule_of(dag_of(["x", "y", "add"], [("x", "add"), ("y", "add")]))
    step(kv, worker_state(kv, "w-add"), trigger(schedule, "x", "add", 1))
    [(key, record)] = [(k, r) for k, r in kv._data.items() if "/joins/" in k and "/src/" in k]
    assert key.endswith("joins/s1/add/src/x")
    assert record.lease is not None, "an abandoned join expires on its own"
    kv.expire_lease(record.lease)
    assert kv.get_prefix(SETTINGS.etcd_prefix + "joins/")[0] == {}, "the version key goes too"
