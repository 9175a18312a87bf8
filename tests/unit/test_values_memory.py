"""droplet.store.values.ValueStore over MemoryKV: inline and chunked values, results, limits."""

from __future__ import annotations

import math
import os

import pytest

from droplet.errors import StoreError, ValueTooLargeError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.store import serializer
from droplet.store.kv import WatchEvent
from droplet.store.memory import MemoryKV
from droplet.store.values import ResultWrite, ValueStore

CHUNK = 1024
LIMIT = 100_000
SETTINGS = Settings(namespace="values-unit", chunk_bytes=CHUNK, max_value_bytes=LIMIT)


@pytest.fixture
def kv() -> MemoryKV:
    return MemoryKV()


@pytest.fixture
def store(kv: MemoryKV) -> ValueStore:
    return ValueStore(kv, SETTINGS)


def chunk_keys(kv: MemoryKV, store: ValueStore) -> set[str]:
    return set(kv.get_prefix(store.keys.chunks)[0])


def head(kv: MemoryKV, store: ValueStore, key: str) -> pb.Value:
    raw = kv.get(store.keys.value(key))
    assert raw is not None, f"no head stored for {key!r}"
    return serializer.from_bytes(raw)


def manifest_of(kv: MemoryKV, store: ValueStore, key: str) -> pb.ChunkManifest:
    value = head(kv, store, key)
    assert value.type == pb.CHUNKED
    manifest = pb.ChunkManifest()
    manifest.ParseFromString(value.body)
    return manifest


def raw_value(size: int) -> pb.Value:
    return pb.Value(type=pb.PICKLE, body=os.urandom(size))


# -- inline and chunked values ---------------------------------------------------------------


def test_missing_key_reads_as_none(store: ValueStore) -> None:
    assert store.get("absent") is None
    assert store.get_value("absent") is None


def test_small_value_is_stored_inline(kv: MemoryKV, store: ValueStore) -> None:
    store.put("small", {"a": [1, 2, 3]})

    assert store.get("small") == {"a": [1, 2, 3]}
    assert head(kv, store, "small").type == pb.PICKLE
    assert chunk_keys(kv, store) == set()


def test_value_at_exactly_chunk_size_stays_inline(kv: MemoryKV, store: ValueStore) -> None:
    value = pb.Value(type=pb.PICKLE, body=b"x" * (CHUNK - 3))  # 1 tag + 2 length bytes

    store.put_values({"edge": value})

    assert len(value.SerializeToString()) == CHUNK
    assert head(kv, store, "edge").type == pb.PICKLE
    assert store.get_value("edge") == value


def test_large_value_is_chunked_and_reads_back_identically(
    kv: MemoryKV, store: ValueStore
) -> None:
    data = os.urandom(10_000)

    store.put("big", data)

    assert store.get("big") == data
    manifest = manifest_of(kv, store, "big")
    body_len = len(serializer.dump(data).body)
    assert manifest.size_bytes == body_len
    assert manifest.chunk_count == math.ceil(body_len / CHUNK)
    assert manifest.inner_type == pb.PICKLE
    assert len(chunk_keys(kv, store)) == manifest.chunk_count
    assert all(len(v) <= CHUNK for v in kv.get_prefix(store.keys.chunks)[0].values())


def test_chunked_cloudpickle_value_keeps_its_type(store: ValueStore) -> None:
    payload = os.urandom(5_000)
    store.put("fn", lambda: payload)

    value = store.get_value("fn")

    assert value is not None and value.type == pb.CLOUDPICKLE
    assert store.get("fn")() == payload


def test_overwriting_a_chunked_value_deletes_the_old_chunks(
    kv: MemoryKV, store: ValueStore
) -> None:
    store.put("k", os.urandom(10_000))
    old = chunk_keys(kv, store)
    second = os.urandom(4_000)

    store.put("k", second)

    new = chunk_keys(kv, store)
    assert store.get("k") == second
    assert old and new, "both values were chunked"
    assert not old & new, "no chunk of the old blob is left"
    assert len(new) == manifest_of(kv, store, "k").chunk_count


def test_overwriting_a_chunked_value_with_an_inline_one_leaves_no_chunks(
    kv: MemoryKV, store: ValueStore
) -> None:
    store.put("k", os.urandom(10_000))

    store.put("k", "tiny")

    assert store.get("k") == "tiny"
    assert chunk_keys(kv, store) == set()


def test_delete_of_a_chunked_value_deletes_its_chunks(kv: MemoryKV, store: ValueStore) -> None:
    store.put("k", os.urandom(10_000))
    store.put("other", os.urandom(3_000))
    other_blob = manifest_of(kv, store, "other").blob_id
    other_chunks = {k for k in chunk_keys(kv, store) if other_blob in k}

    store.delete("k")

    assert store.get("k") is None
    assert store.get("other") is not None
    assert chunk_keys(kv, store) == other_chunks != set()


def test_value_over_the_limit_is_refused_and_nothing_is_written(
    kv: MemoryKV, store: ValueStore
) -> None:
    with pytest.raises(ValueTooLargeError, match="max_value_bytes"):
        store.put("huge", os.urandom(LIMIT + 1))

    assert kv.get_prefix(SETTINGS.etcd_prefix)[0] == {}


def test_value_at_the_limit_is_accepted(store: ValueStore) -> None:
    value = raw_value(LIMIT)

    store.put_values({"max": value})

    assert store.get_value("max") == value


def test_value_one_byte_over_the_limit_is_refused(store: ValueStore) -> None:
    with pytest.raises(ValueTooLargeError):
        store.put_values({"over": raw_value(LIMIT + 1)})


def test_a_missing_chunk_is_reported_not_returned_short(kv: MemoryKV, store: ValueStore) -> None:
    store.put("k", os.urandom(10_000))
    kv.delete(sorted(chunk_keys(kv, store))[3])

    with pytest.raises(StoreError, match="replaced while being read"):
        store.get("k")


def test_a_damaged_chunk_is_reported(kv: MemoryKV, store: ValueStore) -> None:
    store.put("k", os.urandom(10_000))
    kv.put(sorted(chunk_keys(kv, store))[0], b"short")

    with pytest.raises(StoreError, match="damaged"):
        store.get("k")


# -- several values at once ------------------------------------------------------------------


def test_put_values_writes_every_head_in_one_revision(kv: MemoryKV, store: ValueStore) -> None:
    values = {
        "a": serializer.dump(1),
        "b": serializer.dump("two"),
        "c": serializer.dump(os.urandom(5_000)),
    }
    batches: list[list[WatchEvent]] = []
    kv.watch_prefix(store.keys.values, batches.append, lambda exc: None)

    revision = store.put_values(values)

    entries = kv.get_entries([store.keys.value(k) for k in values])
    assert {e.mod_revision for e in entries.values()} == {revision}
    assert len(batches) == 1 and len(batches[0]) == 3, "watchers see one atomic change"
    assert store.get_values(["a", "b", "c"]) == {
        "a": values["a"], "b": values["b"], "c": values["c"]
    }


def test_get_values_leaves_missing_keys_out(store: ValueStore) -> None:
    store.put("present", 1)

    assert set(store.get_values(["present", "absent"])) == {"present"}


def test_get_values_at_an_older_revision(store: ValueStore) -> None:
    first = store.put_values({"k": serializer.dump("v1")})
    store.put("k", "v2")

    old = store.get_value("k", revision=first)

    assert old is not None and serializer.load(old) == "v1"
    assert store.get("k") == "v2"


def test_put_with_a_lease_expires_with_it(kv: MemoryKV, store: ValueStore) -> None:
    lease = kv.grant_lease(30)
    store.put("leased", "v", lease=lease.id)

    kv.expire_lease(lease.id)

    assert store.get("leased") is None


# -- results ---------------------------------------------------------------------------------


def result(key: str, obj: object, call_id: str, expires: bool = False) -> ResultWrite:
    return ResultWrite(key, serializer.dump(obj), call_id, expires)


def test_write_results_stores_value_and_done_marker(kv: MemoryKV, store: ValueStore) -> None:
    store.write_results([result("r1", 42, "call-1")])

    assert store.get("r1") == 42
    assert kv.get(store.keys.call_done("call-1")) == b""


def test_second_result_for_the_same_call_keeps_the_first(store: ValueStore) -> None:
    store.write_results([result("out", "first", "call-1")])

    store.write_results([result("out", "second", "call-1")])

    assert store.get("out") == "first"


def test_same_call_id_writing_another_key_is_refused_too(store: ValueStore) -> None:
    store.write_results([result("out-a", "first", "call-1")])

    store.write_results([result("out-b", "second", "call-1")])

    assert store.get("out-a") == "first"
    assert store.get("out-b") is None


def test_a_batch_with_one_duplicate_still_writes_the_others(store: ValueStore) -> None:
    store.write_results([result("r2", "old", "c2")])

    store.write_results(
        [result("r1", "one", "c1"), result("r2", "new", "c2"), result("r3", "three", "c3")]
    )

    assert store.get_values(["r1", "r2", "r3"]).keys() == {"r1", "r2", "r3"}
    assert store.get("r1") == "one"
    assert store.get("r2") == "old"
    assert store.get("r3") == "three"


def test_more_results_than_one_transaction_holds(store: ValueStore) -> None:
    writes = [result(f"r{i}", i, f"c{i}") for i in range(150)]

    store.write_results(writes)

    stored = store.get_values([f"r{i}" for i in range(150)])
    assert {k: serializer.load(v) for k, v in stored.items()} == {f"r{i}": i for i in range(150)}


def test_error_results_are_stored_as_error_info(store: ValueStore) -> None:
    info = pb.ErrorInfo(code=pb.EXECUTION_ERROR, message="boom")
    store.write_results([ResultWrite("err", serializer.dump_error(info), "c-err", False)])

    back = store.get("err")

    assert isinstance(back, pb.ErrorInfo) and back.message == "boom"


def test_chunked_result_is_stored_and_read_back(store: ValueStore) -> None:
    data = os.urandom(20_000)

    store.write_results([result("big", data, "c-big")])

    assert store.get("big") == data


def test_expiring_results_go_away_with_the_expiry_lease(kv: MemoryKV, store: ValueStore) -> None:
    store.write_results([result("gen", 1, "c-gen", expires=True), result("out", 2, "c-out")])
    lease_id = store.expiry.current()
    assert lease_id is not None

    kv.expire_lease(lease_id)

    assert store.get("gen") is None, "a generated response key expires"
    assert store.get("out") == 2, "an output key does not"
    assert kv.get(store.keys.call_done("c-gen")) is None


def test_no_expiry_lease_when_result_ttl_is_zero(kv: MemoryKV) -> None:
    store = ValueStore(kv, SETTINGS.with_(result_ttl_s=0))

    store.write_results([result("gen", 1, "c1", expires=True)])

    assert store.expiry.current() is None
    assert kv.leases == set()
    assert store.get("gen") == 1


def test_a_refused_duplicate_chunked_result_leaves_no_chunks(
    kv: MemoryKV, store: ValueStore
) -> None:
    store.write_results([result("out", os.urandom(10_000), "call-1")])
    kept = chunk_keys(kv, store)

    store.write_results([result("out", os.urandom(10_000), "call-1")])

    assert chunk_keys(kv, store) == kept


def test_an_expired_chunked_result_leaves_no_chunks(kv: MemoryKV, store: ValueStore) -> None:
    store.write_results([result("gen", os.urandom(10_000), "c-gen", expires=True)])
    lease_id = store.expiry.current()
    assert lease_id is not None and chunk_keys(kv, store)

    kv.expire_lease(lease_id)

    assert store.get("gen") is None
    assert chunk_keys(kv, store) == set()


def test_a_result_replacing_a_chunked_value_drops_its_chunks(
    kv: MemoryKV, store: ValueStore
) -> None:
    store.put("out", os.urandom(10_000))

    store.write_results([result("out", "small", "c1")])

    assert store.get("out") == "small"
    assert chunk_keys(kv, store) == set()
