"""The worker's DAG joins: fan-in, argument order, multi-sink results, failures, expiry."""

from __future__ import annotations

from typing import Any

from droplet.graph import BEGIN, OUTPUT
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.worker import dags
from droplet.worker.joins import ScheduleTable

from .helpers import NAMES, create_function, metadata, worker_state


def schedule_for(dag: pb.Dag, target: str, args: dict[str, list[Any]] | None = None,
                 sid: str = "s1") -> pb.DagSchedule:
    schedule = pb.DagSchedule(id=sid, target_function=target, response_address="client")
    schedule.dag.CopyFrom(dag)
    for f in dag.functions:
        schedule.locations[f] = f"w-{f}"
    for f, values in (args or {}).items():
        for v in values:
            serializer.dump(v, schedule.arguments[f].values.add())
    ups = [c.source for c in dag.connections if c.sink == target]
    schedule.triggers.extend(ups or [BEGIN])
    return schedule


def trigger(source: str, target: str, value: Any = None, aborted: bool = False,
            sid: str = "s1") -> pb.DagTrigger:
    t = pb.DagTrigger(id=sid, source=source, target_function=target, aborted=aborted)
    if value is not None:
        serializer.dump(value, t.result)
    return t


def dag_of(functions: list[str], edges: list[tuple[str, str]]) -> pb.Dag:
    dag = pb.Dag(name="d", functions=functions)
    for s, t in edges:
        dag.connections.add(source=s, sink=t)
    return dag


def test_a_source_runs_on_begin_and_triggers_its_downstream() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    state = worker_state(kv, "w-incr")
    dag = dag_of(["incr", "square"], [("incr", "square")])
    out = Outbox()

    dags.on_schedule(schedule_for(dag, "incr", {"incr": [1]}), state, out)
    assert out.sent == [], "waits for its BEGIN trigger"
    dags.on_trigger(trigger(BEGIN, "incr"), state, out)

    [sent] = out.sent
    assert sent.queue == NAMES.worker("w-square")
    t = sent.message.trigger
    assert (t.source, t.target_function) == ("incr", "square")
    assert serializer.load(t.result) == 2
    assert len(state.schedules) == 0, "the join is freed"


def test_fan_in_passes_own_arguments_then_upstream_results_in_connection_order() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, *args: list(args), "join")
    state = worker_state(kv, "w-join")
    dag = dag_of(["b", "a", "join"], [("b", "join"), ("a", "join")])
    out = Outbox()

    dags.on_trigger(trigger("a", "join", "from-a"), state, out)
    dags.on_trigger(trigger("a", "join", "duplicate-a"), state, out)  # a redelivery
    dags.on_schedule(schedule_for(dag, "join", {"join": ["own"]}), state, out)
    assert out.sent == []
    dags.on_trigger(trigger("b", "join", "from-b"), state, out)

    [reply] = out.messages_to("client")
    assert serializer.load(reply.response.value) == ["own", "from-b", "from-a"]
    assert [r.key for r in out.results] == ["s1"]


def test_several_sinks_are_joined_into_a_dict_by_the_first_sinks_worker() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    create_function(md, lambda _, x: x * 2, "left")
    create_function(md, lambda _, x: x * 3, "right")
    dag = dag_of(["src", "left", "right"], [("src", "left"), ("src", "right")])
    collector = worker_state(kv, "w-left")
    other = worker_state(kv, "w-right")
    out_c, out_o = Outbox(), Outbox()

    dags.on_schedule(schedule_for(dag, "right"), other, out_o)
    dags.on_trigger(trigger("src", "right", 5), other, out_o)
    [to_collector] = out_o.sent
    assert to_collector.queue == NAMES.worker("w-left")
    assert to_collector.message.trigger.target_function == OUTPUT

    dags.on_schedule(schedule_for(dag, "left"), collector, out_c)
    dags.on_trigger(trigger("src", "left", 5), collector, out_c)
    for o in list(out_c.sent):  # the collector's own result comes back through its queue
        if o.queue == NAMES.worker("w-left"):
            dags.on_trigger(o.message.trigger, collector, out_c)
    dags.on_trigger(to_collector.message.trigger, collector, out_c)

    [reply] = out_c.messages_to("client")
    assert serializer.load(reply.response.value) == {"left": 10, "right": 15}


def test_a_failing_function_delivers_its_error_and_nothing_downstream_runs() -> None:
    kv = MemoryKV()
    md = metadata(kv)

    def broken(_: Any, x: Any) -> None:
        raise RuntimeError("node failed")

    create_function(md, broken, "first")
    create_function(md, lambda _, x: x, "second")
    dag = dag_of(["first", "second"], [("first", "second")])
    state = worker_state(kv, "w-first")
    out = Outbox()

    dags.on_schedule(schedule_for(dag, "first", {"first": [1]}), state, out)
    dags.on_trigger(trigger(BEGIN, "first"), state, out)

    [reply] = out.messages_to("client")
    assert reply.response.error == pb.EXECUTION_ERROR
    assert "node failed" in reply.response.message
    [abort] = out.messages_to(NAMES.worker("w-second"))
    assert abort.trigger.aborted

    downstream = worker_state(kv, "w-second")
    out2 = Outbox()
    dags.on_schedule(schedule_for(dag, "second"), downstream, out2)
    dags.on_trigger(abort.trigger, downstream, out2)
    assert out2.sent == [] and downstream.calls_total == 0
    assert len(downstream.schedules) == 0, "per-schedule state is freed"


def test_abandoned_joins_are_freed_after_the_ttl() -> None:
    now = [0.0]
    table = ScheduleTable(10.0, clock=lambda: now[0])
    dag = dag_of(["a", "b", "c"], [("a", "c"), ("b", "c")])
    assert table.add_trigger(trigger("a", "c", 1)) is None
    assert len(table) == 1
    now[0] = 11.0
    assert table.sweep() == 1
    assert len(table) == 0
    assert table.add_schedule(schedule_for(dag, "c")) is None, "late arrivals are dropped"
    assert len(table) == 0
