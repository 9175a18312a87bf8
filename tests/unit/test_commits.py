"""droplet.store.commits over MemoryKV: write-once outcomes, MULTI compares, bounds, leases."""

from __future__ import annotations

import os

import pytest

from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.settings import Settings
from droplet.store import serializer
from droplet.store.commits import Commit, Committer, MultiWrites, Outcome, Status
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore

SETTINGS = Settings(namespace="commits-unit", chunk_bytes=1024, max_value_bytes=100_000)


@pytest.fixture
def kv() -> MemoryKV:
    return MemoryKV()


@pytest.fixture
def store(kv: MemoryKV) -> ValueStore:
    return ValueStore(kv, SETTINGS)


@pytest.fixture
def committer(store: ValueStore) -> Committer:
    return Committer(store, SETTINGS.etcd_max_txn_ops)


def outcome(call_id: str, obj: object, output_key: str = "", keep: bool = False) -> Commit:
    return Commit(outcome=Outcome(call_id, serializer.dump(obj), output_key, keep))


def chunks(kv: MemoryKV, store: ValueStore) -> set[str]:
    return set(kv.get_prefix(store.keys.chunks)[0])


# -- write-once outcomes ---------------------------------------------------------------------


def test_an_outcome_is_written_once_and_a_second_learns_the_first(
    store: ValueStore, committer: Committer
) -> None:
    assert committer.apply(outcome("c1", "first")).status is Status.DONE
    again = committer.apply(outcome("c1", "second"))
    assert again.status is Status.DUPLICATE
    assert again.existing is not None and serializer.load(again.existing) == "first"
    assert serializer.load(store.outcome("c1") or pb.Value()) == "first"


def test_the_output_key_and_the_outcome_are_written_together(
    store: ValueStore, committer: Committer
) -> None:
    committer.apply(outcome("c1", "one", output_key="out"))
    committer.apply(outcome("c2", "two", output_key="out"))
    assert store.get("out") == "two", "a later call's result replaces the key"
    assert serializer.load(store.outcome("c1") or pb.Value()) == "one", (
        "each call keeps its own outcome: a future never reads another call's result"
    )
    committer.apply(outcome("c1", "late duplicate", output_key="out"))
    assert store.get("out") == "two", "a duplicate run writes nothing"


def test_an_error_outcome_reads_back_as_error_info(store: ValueStore,
                                                   committer: Committer) -> None:
    committer.apply(Commit(outcome=Outcome("c", error_value(pb.EXECUTION_ERROR, "boom"))))
    info = store.get("c")
    assert isinstance(info, pb.ErrorInfo) and info.message == "boom"


def test_outcomes_expire_after_the_window_unless_kept(kv: MemoryKV, store: ValueStore,
                                                      committer: Committer) -> None:
    committer.apply(outcome("short", 1))
    committer.apply(outcome("long", 2, keep=True))
    short = kv._data[store.keys.result("short")].lease
    long = kv._data[store.keys.result("long")].lease
    assert short is not None and long is not None and short != long
    kv.expire_lease(short)
    assert store.outcome("short") is None and store.outcome("long") is not None


def test_a_large_outcome_and_its_duplicate_leave_one_set_of_chunks(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    data = os.urandom(10_000)
    committer.apply(outcome("c", data))
    before = chunks(kv, store)
    assert committer.apply(outcome("c", os.urandom(10_000))).status is Status.DUPLICATE
    assert chunks(kv, store) == before
    assert serializer.load(store.outcome("c") or pb.Value()) == data
    lease = kv._data[store.keys.result("c")].lease
    assert lease is not None
    kv.expire_lease(lease)
    assert chunks(kv, store) == set(), "the chunks expire with their outcome"


def test_an_output_key_replacing_a_chunked_value_drops_its_chunks(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    store.put("out", os.urandom(10_000))
    committer.apply(outcome("c", "small", output_key="out"))
    assert chunks(kv, store) == set()


# -- MULTI ---------------------------------------------------------------------------------


def multi(store: ValueStore, snapshot: int, writes: dict[str, object],
          reads: list[str] = ()) -> MultiWrites:  # type: ignore[assignment]
    seen: dict[str, int] = {}
    if reads:
        store.read(list(reads), snapshot, seen)
    return MultiWrites({k: serializer.dump(v) for k, v in writes.items()}, set(), seen,
                       snapshot)


def test_a_commit_fails_when_a_key_it_read_changed_after_its_snapshot(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    store.put("balance", 100)
    snapshot = kv.revision()
    store.put("balance", 50)  # a concurrent writer
    commit = outcome("c", "ok")
    commit.multi = multi(store, snapshot, {"balance": 90}, reads=["balance"])
    result = committer.apply(commit)
    assert result.status is Status.CONFLICT
    assert store.get("balance") == 50 and store.outcome("c") is None, "nothing written"


def test_a_commit_fails_when_a_key_it_read_as_absent_appeared(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    snapshot = kv.revision()
    store.put("flag", "set by someone")
    commit = outcome("c", "ok")
    commit.multi = multi(store, snapshot, {"other": 1}, reads=["flag"])
    assert committer.apply(commit).status is Status.CONFLICT


def test_a_commit_fails_when_a_key_it_read_was_deleted_and_written_again(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    store.put("k", 1)
    snapshot = kv.revision()
    commit = outcome("c", "ok")
    commit.multi = multi(store, snapshot, {"k": 2}, reads=["k"])
    store.delete("k")
    store.put("k", 1)  # the same value, but not the value it read
    assert committer.apply(commit).status is Status.CONFLICT


def test_a_blind_write_conflicts_with_a_write_after_the_snapshot(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    snapshot = kv.revision()
    store.put("k", "concurrent")
    commit = outcome("c", "ok")
    commit.multi = multi(store, snapshot, {"k": "mine"})
    assert committer.apply(commit).status is Status.CONFLICT


def test_an_unchanged_read_set_commits_and_a_reader_never_conflicts(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    store.put_values({"a": serializer.dump(1), "b": serializer.dump(2)})
    snapshot = kv.revision()
    store.put("unrelated", 0)
    commit = outcome("c1", "ok")
    commit.multi = multi(store, snapshot, {"a": 10}, reads=["a", "b"])
    assert committer.apply(commit).status is Status.DONE
    assert store.get("a") == 10
    reader = outcome("c2", "read only")
    reader.multi = multi(store, snapshot, {}, reads=["a", "b"])  # a has changed since
    assert committer.apply(reader).status is Status.DONE


def test_a_duplicate_of_a_committed_multi_call_is_recognised_not_a_conflict(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    store.put("n", 1)
    snapshot = kv.revision()
    first = outcome("c", "ok")
    first.multi = multi(store, snapshot, {"n": 2}, reads=["n"])
    committer.apply(first)
    again = outcome("c", "ok")
    again.multi = multi(store, snapshot, {"n": 2}, reads=["n"])
    assert committer.apply(again).status is Status.DUPLICATE


def test_a_hundred_writes_commit_and_a_commit_past_etcds_bound_is_refused_whole(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    snapshot = kv.revision()
    fits = outcome("c1", "ok")
    fits.multi = multi(store, snapshot, {f"k{i}": i for i in range(100)})
    assert committer.apply(fits).status is Status.DONE
    assert store.get("k99") == 99
    too_big = outcome("c2", "ok")
    too_big.multi = multi(store, kv.revision(), {f"x{i}": i for i in range(200)})
    assert committer.apply(too_big).status is Status.TOO_LARGE
    assert store.get("x0") is None and store.outcome("c2") is None


# -- join records --------------------------------------------------------------------------


def test_records_are_leased_and_an_absent_guard_lets_one_completion_through(
    kv: MemoryKV, store: ValueStore, committer: Committer
) -> None:
    done = store.keys.join_done("s", "f")
    part = store.keys.join_part("s", "f", "a")
    assert committer.apply(Commit(records={part: b"partial"})).status is Status.DONE
    assert kv._data[part].lease is not None
    complete = Commit(records={done: b"result"}, clears=[store.keys.join("s", "f") + "src/"],
                      absent=done)
    assert committer.apply(complete).status is Status.DONE
    assert kv.get(part) is None
    assert committer.apply(complete).status is Status.TAKEN
