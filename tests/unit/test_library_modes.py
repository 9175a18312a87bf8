"""The user library under each consistency mode, and DAG contexts, over an in-memory etcd."""

from __future__ import annotations

from typing import Any

import pytest

from droplet.errors import InvalidArgumentError
from droplet.graph import BEGIN
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from droplet.worker import dags
from droplet.worker.cache import ValueCache
from droplet.worker.library import Library, RunContext, UserLibrary

from .helpers import SETTINGS, commit, create_function, metadata, worker_state


class Runs:
    """A library per run, as the worker makes them."""

    def __init__(self, shared: Library) -> None:
        self.shared = shared
        self.context = RunContext()
        self.lib = shared.for_run(self.context)

    def begin(self, context: RunContext) -> UserLibrary:
        self.context = context
        self.lib = self.shared.for_run(context)
        return self.lib


def library(kv: MemoryKV, cached: bool = True) -> tuple[ValueStore, Runs]:
    store = ValueStore(kv, SETTINGS)
    cache = None
    if cached:
        cache = ValueCache(store, 100, 10_000)
        cache.start()
    return store, Runs(Library("w1", store, cache))


def test_normal_mode_writes_through_and_reads_the_newest() -> None:
    store, runs = library(MemoryKV())
    runs.lib.put("k", 1)
    assert store.get("k") == 1
    store.put("k", 2)  # someone else
    assert runs.lib.get("k") == 2


def test_multi_reads_its_snapshot_and_its_own_writes_and_writes_nothing() -> None:
    kv = MemoryKV()
    store, runs = library(kv)
    store.put_values({"a": serializer.dump(1), "b": serializer.dump(1)})
    snapshot = kv.revision()
    store.put_values({"a": serializer.dump(2), "b": serializer.dump(2)})  # a later writer
    context = RunContext(snapshot_revision=snapshot, writes={})
    lib = runs.begin(context)

    assert lib.get(["a", "b"]) == {"a": 1, "b": 1}, "both from the snapshot"
    lib.put("a", 10)
    lib.delete("b")
    assert lib.get(["a", "b"]) == {"a": 10, "b": None}, "its own writes"
    assert store.get("a") == 2 and store.get("b") == 2, "nothing written yet"
    assert set(context.writes or {}) == {"a"} and context.deletes == {"b"}
    assert set(context.reads) >= {"values/a", "values/b"}, "it remembers what it read"


def test_a_session_never_reads_older_than_it_has_seen() -> None:
    kv = MemoryKV()
    store, runs = library(kv)
    store.put("k", "old")
    runs.lib.get("k")  # cached
    store.kv.put(store.keys.value("k"), serializer.dump("new").SerializeToString())
    lib = runs.begin(RunContext(min_revision=kv.revision()))
    assert lib.get("k") == "new"
    assert runs.context.observed_revision == kv.revision()


def test_a_stale_cache_is_bypassed_for_a_session_ahead_of_it() -> None:
    kv = MemoryKV()
    store = ValueStore(kv, SETTINGS)
    cache = ValueCache(store, 100, 10_000)
    cache.start()
    runs = Runs(Library("w1", store, cache))
    store.put("k", "v1")
    cache.get_values(["k"])
    cache._on_events = lambda events: None  # type: ignore[method-assign]  # deaf from now on
    kv._watches.clear()
    store.put("k", "v2")
    assert runs.begin(RunContext()).get("k") == "v1", "NORMAL: a watch delay behind"
    fresh = runs.begin(RunContext(min_revision=kv.revision()))
    assert fresh.get("k") == "v2", "the session has seen newer: read past the cache"


def test_bad_use_is_a_clear_error_in_the_function() -> None:
    _, runs = library(MemoryKV())
    lib = runs.lib
    with pytest.raises(InvalidArgumentError):
        lib.put(3, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        lib.send("w2", "no broker here")
    with pytest.raises(InvalidArgumentError):
        lib.send("not a worker id!", "x")


def _multi_dag(kv: MemoryKV) -> pb.Dag:
    md = metadata(kv)

    def first(lib: Any) -> str:
        lib.put("x", "from-first")
        return "ok"

    def second(lib: Any, upstream: str) -> Any:
        return lib.get("x"), upstream

    create_function(md, first, "first")
    create_function(md, second, "second")
    dag = pb.Dag(name="d", functions=["first", "second"])
    dag.connections.add(source="first", sink="second")
    return dag


def _multi_trigger(kv: MemoryKV, dag: pb.Dag, attempt: int = 0) -> pb.DagTrigger:
    schedule = pb.DagSchedule(id="s1", call_id="c1", consistency=pb.MULTI,
                              snapshot_revision=kv.revision(), response_address="client",
                              attempt=attempt)
    schedule.dag.CopyFrom(dag)
    schedule.locations.update({"first": "w-first", "second": "w-second"})
    trigger = pb.DagTrigger(id="s1", source=BEGIN, target_function="first")
    trigger.schedule.CopyFrom(schedule)
    return trigger


def test_a_multi_dag_carries_writes_downstream_and_commits_them_with_its_outcome() -> None:
    kv = MemoryKV()
    dag = _multi_dag(kv)
    out = Outbox()
    dags.on_trigger(_multi_trigger(kv, dag), worker_state(kv, "w-first"), out)
    [forward] = out.sent
    trigger = forward.message.trigger
    assert serializer.load(trigger.writes["x"]) == "from-first"
    assert ValueStore(kv, SETTINGS).get("x") is None, "not visible before the end"

    out2 = Outbox()
    dags.on_trigger(trigger, worker_state(kv, "w-second"), out2)
    [reply] = out2.responses_to("client")
    assert serializer.load(reply.value) == ("from-first", "ok")
    [durable] = out2.durable
    assert durable.commit.multi is not None and set(durable.commit.multi.writes) == {"x"}
    assert durable.commit.outcome is not None, "writes and outcome in one transaction"
    commit(kv, out2)
    assert ValueStore(kv, SETTINGS).get("x") == "from-first"


def test_a_multi_commit_fails_when_a_key_it_read_changed_since_its_snapshot() -> None:
    """The lost-update test: two transfers read the same balance at one snapshot; the first
    commit wins, the second finds the balance changed and writes nothing."""
    kv = MemoryKV()
    store = ValueStore(kv, SETTINGS)
    store.put("balance", 1000)

    def withdraw(lib: Any) -> int:
        balance = int(lib.get("balance"))
        lib.put("balance", balance - 10)
        return balance - 10

    create_function(metadata(kv), withdraw, "withdraw")
    dag = pb.Dag(name="w", functions=["withdraw"])
    outs = []
    for call_id in ("t1", "t2"):
        schedule = pb.DagSchedule(id=call_id, call_id=call_id, consistency=pb.MULTI,
                                  snapshot_revision=kv.revision(), response_address="c")
        schedule.dag.CopyFrom(dag)
        schedule.locations["withdraw"] = "w1"
        trigger = pb.DagTrigger(id=call_id, source=BEGIN, target_function="withdraw")
        trigger.schedule.CopyFrom(schedule)
        out = Outbox()
        dags.on_trigger(trigger, worker_state(kv), out)
        outs.append(out)
    [first] = commit(kv, outs[0])
    [second] = commit(kv, outs[1])
    assert first.status.name == "DONE"
    assert second.status.name == "CONFLICT"
    assert store.get("balance") == 990, "one withdrawal, not a lost update"
    [again] = outs[1].durable[0].on_conflict
    retry = again.message.dag_call
    assert retry.call_id == "t2" and retry.attempt == 1, "the loser runs again"


def test_a_multi_call_that_spent_its_attempts_is_not_run_again() -> None:
    kv = MemoryKV()
    dag = _multi_dag(kv)
    state = worker_state(kv, "w-second")
    out = Outbox()
    dags.on_trigger(_multi_trigger(kv, dag, attempt=state.multi_max_attempts - 1),
                    worker_state(kv, "w-first"), out)
    final = Outbox()
    dags.on_trigger(out.sent[0].message.trigger, state, final)
    assert final.durable[0].on_conflict == [], "the cycle answers CONFLICT instead"


def test_a_multi_call_whose_snapshot_was_compacted_runs_again_on_a_fresh_one() -> None:
    kv = MemoryKV()
    dag = _multi_dag(kv)

    def reader(lib: Any) -> Any:
        return lib.get("x")

    create_function(metadata(kv), reader, "first")
    trigger = _multi_trigger(kv, dag)
    kv.put("/unit/values/x", b"")  # history moves on...
    kv.compact(kv.revision())  # ...and the snapshot's revision is compacted away
    out = Outbox()
    dags.on_trigger(trigger, worker_state(kv, "w-first"), out)
    [again] = out.sent
    assert again.message.WhichOneof("kind") == "dag_call"
    assert again.message.dag_call.attempt == 1 and out.durable == []
