"""The worker's value cache over an in-memory etcd: hits, watch invalidation, LRU bounds."""

from __future__ import annotations

from droplet.store import serializer
from droplet.store.commits import Commit, Committer, Outcome
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from droplet.worker.cache import ValueCache
from droplet.worker.library import Library, RunContext

from .helpers import SETTINGS


def make(max_entries: int = 10, max_bytes: int = 10_000) -> tuple[ValueStore, ValueCache]:
    store = ValueStore(MemoryKV(), SETTINGS)
    cache = ValueCache(store, max_entries, max_bytes)
    cache.start()
    return store, cache


def test_a_read_is_cached_and_served_from_memory() -> None:
    store, cache = make()
    store.put("k", "v1")
    assert serializer.load(cache.get_values(["k"])["k"]) == "v1"
    assert cache.misses == 1 and "k" in cache
    assert serializer.load(cache.get_values(["k"])["k"]) == "v1"
    assert cache.hits == 1


def test_a_write_by_anyone_else_reaches_the_cache_through_the_watch() -> None:
    store, cache = make()
    store.put("k", "v1")
    cache.get_values(["k"])
    store.put("k", "v2")  # another process, as far as the cache knows
    assert serializer.load(cache.get_values(["k"])["k"]) == "v2"
    assert cache.misses == 1, "updated in place, not re-read"
    store.delete("k")
    assert "k" not in cache
    assert cache.get_values(["k"]) == {}


def test_a_read_that_raced_a_newer_write_is_not_cached() -> None:
    store, cache = make()
    store.put("k", "old")
    stale_revision = store.kv.revision()
    store.put("k", "new")  # seen by the watch while "k" is not cached
    cache.store("k", serializer.dump("old"), stale_revision)
    assert "k" not in cache


def test_least_recently_used_entries_go_first() -> None:
    store, cache = make(max_entries=2)
    for key in ("a", "b", "c"):
        store.put(key, key)
    cache.get_values(["a"])
    cache.get_values(["b"])
    cache.get_values(["a"])  # a is now the most recent
    cache.get_values(["c"])
    assert cache.keys() == ["a", "c"]


def test_the_byte_bound_holds() -> None:
    store, cache = make(max_entries=100, max_bytes=1000)
    for i in range(10):
        store.put(f"k{i}", "x" * 200)
        cache.get_values([f"k{i}"])
    assert 1 <= len(cache.keys()) <= 4


def test_call_outcomes_are_not_cached() -> None:
    store, cache = make()
    Committer(store, 128).apply(Commit(outcome=Outcome("call-1", serializer.dump(5))))
    assert serializer.load(cache.get_values(["call-1"])["call-1"]) == 5
    assert "call-1" not in cache


def test_after_its_watch_breaks_the_cache_serves_nothing_until_a_new_watch_runs() -> None:
    """A read in flight when the watch broke must not fill the cache afterwards: writes
    made while no watch ran would never reach that entry."""
    store, cache = make()
    store.put("k", "v1")
    cache.get_values(["k"])
    cache._on_error(RuntimeError("watch lost"))  # restarts itself half a second later
    assert not cache.fresh_for(0) and "k" not in cache
    store.put("k", "v2")
    assert serializer.load(cache.get_values(["k"])["k"]) == "v2"
    assert "k" not in cache, "nothing is cached while no watch runs"
    cache.start()
    store.put("k", "v3")
    assert serializer.load(cache.get_values(["k"])["k"]) == "v3"
    assert cache.fresh_for(0)


def test_the_library_writes_through_and_caches_its_own_writes() -> None:
    store, cache = make()
    lib = Library("w1", store, cache).for_run(RunContext())
    lib.put("mine", {"n": 1})
    assert "mine" in cache
    assert store.get("mine") == {"n": 1}
    lib.put_many({"a": 1, "b": 2})
    assert lib.get(["a", "b", "zz"]) == {"a": 1, "b": 2, "zz": None}
    lib.delete("a")
    assert lib.get("a") is None and "a" not in cache
