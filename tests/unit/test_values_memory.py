"""droplet.store.values.ValueStore over MemoryKV: inline and chunked values, limits, signatures."""

from __future__ import annotations

import math
import os

import pytest

from droplet.errors import SignatureError, StoreError, ValueTooLargeError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.store import serializer
from droplet.store.kv import WatchEvent
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore

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


# -- signatures and orphans ------------------------------------------------------------------


def signed_store(kv: MemoryKV) -> ValueStore:
    return ValueStore(kv, SETTINGS.with_(signing_key="fleet-secret"))


def test_with_a_fleet_secret_a_value_written_without_it_is_refused_unread(kv: MemoryKV) -> None:
    """A pickle planted straight into etcd must never be loaded: it could run code."""
    store = signed_store(kv)
    planted = serializer.dump(os.system)  # a callable: loading it would import os.system
    kv.put(store.keys.value("k"), planted.SerializeToString())
    with pytest.raises(SignatureError):
        store.get("k")
    with pytest.raises(SignatureError):
        store.read(["k"])


def test_a_signed_value_copied_to_another_key_is_refused(kv: MemoryKV) -> None:
    store = signed_store(kv)
    store.put("a", "for a only")
    kv.put(store.keys.value("b"), kv.get(store.keys.value("a")) or b"")
    assert store.get("a") == "for a only"
    with pytest.raises(SignatureError):
        store.get("b")


def test_a_large_signed_value_is_checked_chunk_by_chunk(kv: MemoryKV) -> None:
    store = signed_store(kv)
    data = os.urandom(CHUNK * 3)
    store.put("big", data)
    assert store.get("big") == data
    chunk = sorted(chunk_keys(kv, store))[1]
    kv.put(chunk, os.urandom(CHUNK))  # the head is intact and signed; a chunk is not
    with pytest.raises(StoreError, match="damaged"):
        store.get("big")


def test_chunks_of_a_writer_that_died_before_linking_them_are_swept(
    kv: MemoryKV, store: ValueStore
) -> None:
    prepared = store.blobs.prepare(store.keys.value("never"), raw_value(CHUNK * 3), None)
    store.blobs.write_chunks([prepared])  # ... and the writer died here
    store.put("linked", os.urandom(CHUNK * 3))
    assert chunk_keys(kv, store) and kv.get_prefix(store.keys.pending)[0]
    assert store.blobs.sweep_pending(older_than_s=3600) == 0, "too young to be an orphan"
    assert store.blobs.sweep_pending(older_than_s=-1) == 1
    manifest = manifest_of(kv, store, "linked")
    assert {k.split("/")[-2] for k in chunk_keys(kv, store)} == {manifest.blob_id}
    assert store.get("linked") is not None
