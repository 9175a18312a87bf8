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
from droplet.worker.library import CallContext, UserLibrary

from .helpers import SETTINGS, create_function, metadata, worker_state


def library(kv: MemoryKV, cached: bool = True) -> tuple[ValueStore, UserLibrary]:
    store = ValueStore(kv, SETTINGS)
    cache = None
    if cached:
        cache = ValueCache(store, 100, 10_000)
        cache.start()
    return store, UserLibrary("w1", store, cache)


def test_normal_mode_writes_through_and_reads_the_newest() -> None:
    store, lib = library(MemoryKV())
    lib.put("k", 1)
    assert store.get("k") == 1
    store.put("k", 2)  # someone else
    assert lib.get("k") == 2


def test_multi_reads_its_snapshot_and_its_own_writes_and_writes_nothing() -> None:
    kv = MemoryKV()
    store, lib = library(kv)
    store.put_values({"a": serializer.dump(1), "b": serializer.dump(1)})
    snapshot = kv.revision()
    store.put_values({"a": serializer.dump(2), "b": serializer.dump(2)})  # a later writer
    context = CallContext(snapshot_revision=snapshot, writes={})
    lib.begin(context)

    assert lib.get(["a", "b"]) == {"a": 1, "b": 1}, "both from the snapshot"
    lib.put("a", 10)
    lib.delete("b")
    assert lib.get(["a", "b"]) == {"a": 10, "b": None}, "its own writes"
    assert store.get("a") == 2 and store.get("b") == 2, "nothing written yet"
    assert set(context.writes or {}) == {"a"} and context.deletes == {"b"}


def test_a_session_never_reads_older_than_it_has_seen() -> None:
    kv = MemoryKV()
    store, lib = library(kv)
    store.put("k", "old")
    lib.get("k")  # cached
    store.kv.put(store.keys.value("k"), serializer.dump("new").SerializeToString())
    lib.begin(CallContext(min_revision=kv.revision()))
    assert lib.get("k") == "new"
    assert lib.context.observed_revision == kv.revision()


def test_a_stale_cache_is_bypassed_for_a_session_ahead_of_it() -> None:
    kv = MemoryKV()
    store = ValueStore(kv, SETTINGS)
    cache = ValueCache(store, 100, 10_000)  # never started: it hears of no write
    lib = UserLibrary("w1", store, cache)
    store.put("k", "v1")
    cache.get_values(["k"])
    store.put("k", "v2")
    lib.begin(CallContext())
    assert lib.get("k") == "v1", "NORMAL: one watch delay behind is allowed"
    lib.begin(CallContext(min_revision=kv.revision()))
    assert lib.get("k") == "v2", "the session has seen newer: read past the cache"


def test_bad_use_is_a_clear_error_in_the_function() -> None:
    _, lib = library(MemoryKV())
    with pytest.raises(InvalidArgumentError):
        lib.put(3, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        lib.send("w2", "no broker here")
    with pytest.raises(InvalidArgumentError):
        lib.send("not a worker id!", "x")


def test_a_multi_dag_carries_writes_downstream_and_commits_them_at_the_end() -> None:
    kv = MemoryKV()
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

    def schedule(target: str, triggers: list[str]) -> pb.DagSchedule:
        s = pb.DagSchedule(id="s1", call_id="c1", target_function=target,
                           consistency=pb.MULTI, snapshot_revision=kv.revision(),
                           response_address="client")
        s.dag.CopyFrom(dag)
        s.locations.update({"first": "w-first", "second": "w-second"})
        s.triggers.extend(triggers)
        return s

    out = Outbox()
    state = worker_state(kv, "w-first")
    dags.on_schedule(schedule("first", [BEGIN]), state, out)
    dags.on_trigger(pb.DagTrigger(id="s1", source=BEGIN, target_function="first"), state, out)
    [forward] = out.sent
    trigger = forward.message.trigger
    assert serializer.load(trigger.writes["x"]) == "from-first"
    assert ValueStore(kv, SETTINGS).get("x") is None, "not visible before the end"

    out2 = Outbox()
    downstream = worker_state(kv, "w-second")
    dags.on_schedule(schedule("second", ["first"]), downstream, out2)
    dags.on_trigger(trigger, downstream, out2)
    [reply] = out2.messages_to("client")
    assert serializer.load(reply.response.value) == ("from-first", "ok")
    [(writes, deletes)] = out2.commits
    assert set(writes) == {"x"} and deletes == set()
