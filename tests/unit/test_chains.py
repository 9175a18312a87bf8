"""Chains of DAG calls (call_dag(..., continuation=...)) without a broker: the last step of a
DAG call with continuations makes the next DagCall instead of answering, and the scheduler
passes the previous result to the next DAG's sources; plus what the client accepts (the
continuation forms, speculative functions, dry_run's description)."""

from __future__ import annotations

import pytest

from droplet.client.dagspecs import add_continuations, dag_functions, describe
from droplet.errors import InvalidArgumentError
from droplet.graph import BEGIN
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import dags as scheduler_dags
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.store.serializer import DropletReference
from droplet.worker import dags

from .helpers import (
    NAMES,
    commit,
    create_function,
    linear_dag,
    metadata,
    scheduler_state,
    worker_state,
)


def _final_trigger(continuations: list[pb.Continuation]) -> pb.DagTrigger:
    schedule = pb.DagSchedule(id="s1", call_id="call-1", response_address="client",
                              output_key="out", client_id="session", min_revision=7)
    schedule.dag.CopyFrom(pb.Dag(name="first", functions=["double"]))
    schedule.locations["double"] = "w-double"
    serializer.dump(21, schedule.arguments["double"].values.add())
    schedule.continuations.extend(continuations)
    trigger = pb.DagTrigger(id="s1", source=BEGIN, target_function="double")
    trigger.schedule.CopyFrom(schedule)
    return trigger


def test_the_end_of_a_dag_call_with_a_continuation_makes_the_next_call_instead_of_answering(
) -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x * 2, "double")
    second = pb.Continuation(dag="second")
    serializer.dump("own", second.function_args["f"].values.add())
    out = Outbox()
    dags.on_trigger(_final_trigger([second, pb.Continuation(dag="third")]),
                    worker_state(kv, "w-double"), out)
    commit(kv, out)

    assert out.responses_to("client") == [] and out.outcomes() == [], "no outcome yet"
    [sent] = out.sent
    assert sent.queue == NAMES.calls
    call = sent.message.dag_call
    assert call.name == "second" and call.call_id == "call-1", "the same call goes on"
    assert (call.response_address, call.output_key, call.client_id) == (
        "client", "out", "session")
    assert serializer.load(call.chained_input) == 42
    assert [serializer.load(v) for v in call.function_args["f"].values] == ["own"]
    assert [c.dag for c in call.continuations] == ["third"], "the rest of the chain"
    assert call.min_revision >= 7, "a session never reads older than it has"


def test_a_failure_in_a_chained_dag_is_the_calls_outcome_and_nothing_goes_on() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: 1 / 0, "double")
    out = Outbox()
    dags.on_trigger(_final_trigger([pb.Continuation(dag="second")]),
                    worker_state(kv, "w-double"), out)
    commit(kv, out)
    assert out.messages_to(NAMES.calls) == []
    [outcome] = out.outcomes()
    assert outcome.call_id == "call-1" and outcome.value.type == pb.ERROR


def test_the_scheduler_passes_the_previous_result_to_each_source_last() -> None:
    state = scheduler_state("w-a", "w-b", "w-c")
    dag = pb.Dag(name="next", functions=["a", "b", "c"])
    dag.connections.add(source="a", sink="c")
    dag.connections.add(source="b", sink="c")
    state.dags["next"] = pb.DagRecord(dag=dag, ready=True)
    for f in "abc":
        state.pins[f"w-{f}"] = pb.PinRecord(dag_name="next", function_name=f, worker_id=f"w-{f}")
    call = pb.DagCall(name="next", call_id="call-1", response_address="client")
    serializer.dump("own", call.function_args["a"].values.add())
    serializer.dump(42, call.chained_input)
    call.continuations.add(dag="after")
    out = Outbox()
    assert scheduler_dags.call_dag(call, None, state, out).success
    triggers = [o.message.trigger for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    schedule = triggers[0].schedule
    assert [serializer.load(v) for v in schedule.arguments["a"].values] == ["own", 42]
    assert [serializer.load(v) for v in schedule.arguments["b"].values] == [42]
    assert "c" not in schedule.arguments, "only sources get it"
    assert [c.dag for c in schedule.continuations] == ["after"]
    assert schedule.response_address == "client"


def test_a_multi_call_with_a_continuation_is_refused_by_the_scheduler() -> None:
    state = scheduler_state("w-a")
    state.dags["d"] = pb.DagRecord(dag=linear_dag("d", ["a"]), ready=True)
    state.pins["w-a"] = pb.PinRecord(dag_name="d", function_name="a", worker_id="w-a")
    call = pb.DagCall(name="d", call_id="c", consistency=pb.MULTI)
    call.continuations.add(dag="e")
    out = Outbox()
    assert scheduler_dags.call_dag(call, "addr", state, out).error == pb.INVALID_REQUEST
    assert [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"] == []


# -- what the client accepts ---------------------------------------------------------------

def test_continuation_forms() -> None:
    call = pb.DagCall(name="d")
    add_continuations(call, "e")
    assert [c.dag for c in call.continuations] == ["e"]
    call = pb.DagCall(name="d")
    add_continuations(call, ("e", {"f": [1, 2]}))
    assert [serializer.load(v) for v in call.continuations[0].function_args["f"].values] == [1, 2]
    call = pb.DagCall(name="d")
    add_continuations(call, ["e", ("g", {"h": ["x"]}), "i"])
    assert [c.dag for c in call.continuations] == ["e", "g", "i"]
    for bad in (42, [], ["e", 3], ("e", {"f": "xy"}), {"e": []}, ["bad name!"]):
        with pytest.raises(InvalidArgumentError):
            add_continuations(pb.DagCall(name="d"), bad)
    with pytest.raises(InvalidArgumentError, match="MULTI"):
        add_continuations(pb.DagCall(name="d", consistency=pb.MULTI), "e")


def test_speculative_function_entries() -> None:
    names, specs = dag_functions(["a", ("b", [None, -1]), ("c", [], 3)], default_copies=2)
    assert names == ["a", "b", "c"]
    assert [(s.function, s.copies) for s in specs] == [("b", 2), ("c", 3)]
    assert [serializer.load(v) for v in specs[0].invalid_results] == [None, -1]
    for bad in (["a", ("b",)], [("b", None)], [("b", "xy")], [("b", [], 0)], [("b", [], True)],
                "ab"):
        with pytest.raises(InvalidArgumentError):
            dag_functions(bad, 2)


def test_a_dry_run_description_is_readable() -> None:
    call = pb.DagCall(name="d", call_id="c1", direct_response=True, output_key="k")
    serializer.dump([1, 2], call.function_args["f"].values.add())
    serializer.dump(DropletReference("key"), call.function_args["f"].values.add())
    add_continuations(call, ("e", {"g": [3]}))
    shown = describe(call, "ns.scheduler.calls")
    assert shown["dag"] == "d" and shown["queue"] == "ns.scheduler.calls"
    assert shown["arguments"] == {"f": [[1, 2], DropletReference("key")]}
    assert shown["continuation"] == [{"dag": "e", "arguments": {"g": [3]}}]
    assert (shown["consistency"], shown["direct_response"], shown["output_key"]) == (
        "NORMAL", True, "k")
    assert shown["message"] is call and shown["size_bytes"] == call.ByteSize()
