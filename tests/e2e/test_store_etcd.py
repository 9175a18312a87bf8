"""ValueStore and EtcdKV against a real etcd: the same contract MemoryKV keeps in unit tests."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator

import etcd3
import pytest

from droplet.errors import StoreError, ValueTooLargeError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.store import etcd_watch, serializer
from droplet.store.commits import Commit, Committer, MultiWrites, Outcome, Status
from droplet.store.etcd import EtcdKV
from droplet.store.kv import (
    Delete,
    ModRevisionBelow,
    ModRevisionIs,
    Put,
    ValueIs,
    VersionIs,
    WatchEvent,
)
from droplet.store.values import ValueStore

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024

# EtcdKV.get_entries reads several keys with client.transaction(compare=[], success=[...]) and
# no failure list; python3-etcd3 0.13 iterates failure=None and raises TypeError. Every read of
# a value of two or more chunks, every put_values and get_values of two or more keys, fails.
@pytest.fixture(params=["lean", "grpc"])
def kv(settings: Settings, request: pytest.FixtureRequest) -> Iterator[EtcdKV]:
    """An EtcdKV on the test's fresh namespace, over each KV transport (settings.
    etcd_transport); its whole prefix is deleted afterwards."""
    client = EtcdKV(settings.with_(etcd_transport=request.param))
    yield client
    try:
        client.delete(settings.etcd_prefix, prefix=True)
    finally:
        client.close()


@pytest.fixture
def store(kv: EtcdKV, settings: Settings) -> ValueStore:
    return ValueStore(kv, settings)


def raw_key(settings: Settings, name: str) -> str:
    return f"{settings.etcd_prefix}raw/{name}"


def chunk_count(kv: EtcdKV, store: ValueStore) -> int:
    return len(kv.get_prefix(store.keys.chunks)[0])


# -- values ----------------------------------------------------------------------------------


def test_put_and_get(store: ValueStore) -> None:
    store.put("k", {"answer": 42, "list": [1, 2]})

    assert store.get("k") == {"answer": 42, "list": [1, 2]}
    assert store.get("absent") is None


def test_put_overwrites_and_delete_removes(store: ValueStore) -> None:
    store.put("k", "one")
    store.put("k", "two")
    assert store.get("k") == "two"

    store.delete("k")

    assert store.get("k") is None


def test_a_64_mib_value_is_chunked_and_read_back_equal(kv: EtcdKV, store: ValueStore) -> None:
    data = os.urandom(64 * MiB)

    store.put("huge", data)
    back = store.get("huge")

    assert isinstance(back, bytes) and len(back) == len(data)
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    head = kv.get(store.keys.value("huge"))
    assert head is not None
    manifest = pb.ChunkManifest()
    manifest.ParseFromString(serializer.from_bytes(head).body)
    assert manifest.chunk_count >= 64, "stored as chunks of at most 1 MiB"

    store.delete("huge")
    assert store.get("huge") is None
    assert chunk_count(kv, store) == 0, "deleting the value deletes its chunks"


def test_overwriting_a_chunked_value_deletes_the_old_chunks(
    kv: EtcdKV, store: ValueStore
) -> None:
    store.put("big", os.urandom(3 * MiB))
    before = set(kv.get_prefix(store.keys.chunks)[0])
    replacement = os.urandom(2 * MiB)

    store.put("big", replacement)

    after = set(kv.get_prefix(store.keys.chunks)[0])
    assert store.get("big") == replacement
    assert before and after and not before & after


def test_a_value_over_the_configured_max_is_refused(kv: EtcdKV, settings: Settings) -> None:
    small = ValueStore(kv, settings.with_(max_value_bytes=1000))

    with pytest.raises(ValueTooLargeError):
        small.put("k", b"x" * 2000)

    assert small.get("k") is None
    assert kv.get_prefix(settings.etcd_prefix)[0] == {}


def test_get_values_of_several_keys(store: ValueStore) -> None:
    big = os.urandom(2 * MiB)
    store.put("a", 1)
    store.put("b", "two")
    store.put("c", big)

    values = store.get_values(["a", "b", "c", "missing"])

    assert set(values) == {"a", "b", "c"}
    assert serializer.load(values["a"]) == 1
    assert serializer.load(values["b"]) == "two"
    assert serializer.load(values["c"]) == big


def test_put_values_is_one_revision(kv: EtcdKV, store: ValueStore) -> None:
    revision = store.put_values({"x": serializer.dump(1), "y": serializer.dump(2)})

    entries = kv.get_entries([store.keys.value("x"), store.keys.value("y")])

    assert {e.mod_revision for e in entries.values()} == {revision}


def test_put_values_of_two_inline_values_near_chunk_size(store: ValueStore) -> None:
    first = pb.Value(type=pb.PICKLE, body=os.urandom(900 * 1024))
    second = pb.Value(type=pb.PICKLE, body=os.urandom(900 * 1024))

    store.put_values({"p": first, "q": second})

    assert store.get_value("p") == first
    assert store.get_value("q") == second


def test_two_outcomes_near_the_chunk_size_in_one_transaction_each(
    store: ValueStore, settings: Settings
) -> None:
    committer = Committer(store, settings.etcd_max_txn_ops)
    first = pb.Value(type=pb.PICKLE, body=os.urandom(900 * 1024))
    second = pb.Value(type=pb.PICKLE, body=os.urandom(900 * 1024))

    committer.apply(Commit(outcome=Outcome("r1", first, output_key="out1")))
    committer.apply(Commit(outcome=Outcome("r2", second)))

    assert store.outcome("r1") == first and store.get_value("out1") == first
    assert store.get_value("r2") == second


def test_get_value_at_an_older_revision(store: ValueStore) -> None:
    first = store.put_values({"k": serializer.dump("v1")})
    store.put("k", "v2")

    old = store.get_value("k", revision=first)

    assert old is not None and serializer.load(old) == "v1"
    assert store.get("k") == "v2"


def test_an_outcome_is_written_once_per_call(store: ValueStore, settings: Settings) -> None:
    committer = Committer(store, settings.etcd_max_txn_ops)
    done = committer.apply(Commit(outcome=Outcome("call-1", serializer.dump("first"), "out")))
    again = committer.apply(Commit(outcome=Outcome("call-1", serializer.dump("second"), "out")))

    assert done.status is Status.DONE and again.status is Status.DUPLICATE
    assert again.existing is not None and serializer.load(again.existing) == "first"
    assert store.get("out") == "first"


def test_a_multi_commit_on_etcd_conflicts_with_a_later_write_and_respects_the_op_bound(
    kv: EtcdKV, store: ValueStore, settings: Settings
) -> None:
    committer = Committer(store, settings.etcd_max_txn_ops)
    store.put("balance", 100)
    snapshot = kv.revision()
    seen: dict[str, int] = {}
    store.read(["balance", "absent"], snapshot, seen)
    writes = {"balance": serializer.dump(90)}
    store.put("balance", 50)
    lost = committer.apply(Commit(outcome=Outcome("t1", serializer.dump("ok")),
                                  multi=MultiWrites(writes, set(), seen, snapshot)))
    assert lost.status is Status.CONFLICT and store.get("balance") == 50

    many = {f"k{i}": serializer.dump(i) for i in range(100)}
    fits = committer.apply(Commit(outcome=Outcome("t2", serializer.dump("ok")),
                                  multi=MultiWrites(many, set(), {}, kv.revision())))
    assert fits.status is Status.DONE and store.get("k99") == 99
    with pytest.raises(StoreError, match="too many operations"):
        kv.txn([], [Put(raw_key(settings, f"x{i}"), b"") for i in range(129)])


def test_entries_carry_their_create_revision_and_version(kv: EtcdKV, settings: Settings) -> None:
    key = raw_key(settings, "versioned")
    created = kv.put(key, b"1")
    kv.put(key, b"2")
    entry = kv.get_entries([key])[key]
    assert (entry.create_revision, entry.version) == (created, 2)
    assert kv.txn([ModRevisionIs(raw_key(settings, "absent"), 0)], [])[0] is True
    assert kv.txn([ModRevisionIs(key, entry.mod_revision)], [])[0] is True
    assert kv.txn([ModRevisionIs(key, created)], [])[0] is False


# -- EtcdKV ----------------------------------------------------------------------------------


def test_kv_put_get_delete(kv: EtcdKV, settings: Settings) -> None:
    key = raw_key(settings, "a")

    r1 = kv.put(key, b"1")
    r2 = kv.put(key, b"2")

    assert r2 > r1
    assert kv.get(key) == b"2"
    assert kv.delete(key) == 1
    assert kv.get(key) is None
    assert kv.delete(key) == 0


def test_kv_deleting_a_missing_key_keeps_the_revision(kv: EtcdKV, settings: Settings) -> None:
    kv.put(raw_key(settings, "present"), b"1")
    before = kv.revision()

    kv.delete(raw_key(settings, "absent"))

    assert kv.revision() == before


def test_kv_get_prefix_and_delete_prefix(kv: EtcdKV, settings: Settings) -> None:
    kv.put(raw_key(settings, "p/1"), b"1")
    kv.put(raw_key(settings, "p/2"), b"2")
    kv.put(raw_key(settings, "q"), b"3")

    items, revision = kv.get_prefix(raw_key(settings, "p/"))

    assert items == {raw_key(settings, "p/1"): b"1", raw_key(settings, "p/2"): b"2"}
    assert revision == kv.revision()
    assert kv.delete(raw_key(settings, "p/"), prefix=True) == 2
    assert kv.get(raw_key(settings, "q")) == b"3"


def test_kv_get_entries_of_one_key(kv: EtcdKV, settings: Settings) -> None:
    key = raw_key(settings, "one")
    rev = kv.put(key, b"v")

    found = kv.get_entries([key])

    assert {k: (e.value, e.mod_revision) for k, e in found.items()} == {key: (b"v", rev)}
    assert kv.get_entries([raw_key(settings, "missing")]) == {}


def test_kv_get_entries_at_an_older_revision(kv: EtcdKV, settings: Settings) -> None:
    a, b = raw_key(settings, "a"), raw_key(settings, "b")
    ra = kv.put(a, b"old")
    kv.put(a, b"new")
    kv.put(b, b"b")

    then = kv.get_entries([a, b], revision=ra)

    assert {k: (e.value, e.mod_revision) for k, e in then.items()} == {a: (b"old", ra)}


def test_kv_get_entries_of_several_keys(kv: EtcdKV, settings: Settings) -> None:
    a, b = raw_key(settings, "a"), raw_key(settings, "b")
    ra = kv.put(a, b"1")
    rb = kv.put(b, b"2")

    now = kv.get_entries([a, b, raw_key(settings, "missing")])

    assert {k: (e.value, e.mod_revision) for k, e in now.items()} == {
        a: (b"1", ra), b: (b"2", rb)
    }


def test_kv_txn_version_is(kv: EtcdKV, settings: Settings) -> None:
    key, lost = raw_key(settings, "k"), raw_key(settings, "lost")

    ok, rev = kv.txn([VersionIs(key, 0)], [Put(key, b"first")], [Put(lost, b"x")])
    assert ok is True and kv.get(key) == b"first" and rev == kv.revision()

    ok, _ = kv.txn([VersionIs(key, 0)], [Put(key, b"second")], [Put(lost, b"x")])
    assert ok is False and kv.get(key) == b"first" and kv.get(lost) == b"x"

    kv.put(key, b"again")
    assert kv.txn([VersionIs(key, 2)], [])[0] is True
    assert kv.txn([VersionIs(key, 1)], [])[0] is False


def test_kv_txn_value_is_and_mod_revision_below(kv: EtcdKV, settings: Settings) -> None:
    key = raw_key(settings, "k")
    written = kv.put(key, b"v")

    assert kv.txn([ValueIs(key, b"v")], [])[0] is True
    assert kv.txn([ValueIs(key, b"w")], [])[0] is False
    assert kv.txn([ValueIs(raw_key(settings, "absent"), b"")], [])[0] is False
    assert kv.txn([ModRevisionBelow(key, written + 1)], [])[0] is True
    assert kv.txn([ModRevisionBelow(key, written)], [])[0] is False
    assert kv.txn([ModRevisionBelow(raw_key(settings, "absent"), 1)], [])[0] is True


def test_kv_txn_delete_prefix_op(kv: EtcdKV, settings: Settings) -> None:
    kv.put(raw_key(settings, "d/1"), b"1")
    kv.put(raw_key(settings, "d/2"), b"2")

    ok, rev = kv.txn([], [Delete(raw_key(settings, "d/"), prefix=True),
                          Put(raw_key(settings, "e"), b"3")])

    assert ok is True
    assert kv.get_prefix(raw_key(settings, "d/"))[0] == {}
    assert kv.get(raw_key(settings, "e")) == b"3"
    assert rev == kv.revision()


def test_kv_revoked_lease_removes_its_key(kv: EtcdKV, settings: Settings) -> None:
    leased, plain = raw_key(settings, "leased"), raw_key(settings, "plain")
    lease = kv.grant_lease(60)
    kv.put(leased, b"v", lease=lease.id)
    kv.put(plain, b"v")
    lease.refresh()

    lease.revoke()

    assert kv.get(leased) is None
    assert kv.get(plain) == b"v"
    with pytest.raises(StoreError):
        lease.refresh()


def test_kv_lease_refreshes_keep_its_key_past_its_ttl_and_it_goes_without_them(
    kv: EtcdKV, settings: Settings
) -> None:
    key = raw_key(settings, "kept")
    lease = kv.grant_lease(2)
    kv.put(key, b"v", lease=lease.id)
    until = time.monotonic() + 3.5
    while time.monotonic() < until:  # past the 2 s ttl, refreshed
        lease.refresh()
        time.sleep(0.4)
    assert kv.get(key) == b"v"
    deadline = time.monotonic() + 5
    while kv.get(key) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kv.get(key) is None, "not refreshed, the lease ran out"


def test_a_lean_store_watches_and_keeps_leases_without_grpc(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watch streams and lease refreshes are what woke an idle process's grpcio threads."""

    def no_grpc(*args: object, **kwargs: object) -> None:
        raise AssertionError("a gRPC stub was used")

    monkeypatch.setattr(etcd_watch.etcdrpc, "WatchStub", no_grpc)
    monkeypatch.setattr(etcd3.MultiEndpointEtcd3Client, "leasestub", property(no_grpc))
    kv = EtcdKV(settings.with_(etcd_transport="lean"))
    prefix = raw_key(settings, "lean/")
    events: list[WatchEvent] = []
    errors: list[Exception] = []
    big = b"b" * 100_000  # an event over several frames
    try:
        cancel = kv.watch_prefix(prefix, events.extend, errors.append,
                                 start_revision=kv.revision() + 1)
        lease = kv.grant_lease(30)
        for i in range(5):
            kv.put(f"{prefix}{i}", big, lease=lease.id)
        lease.refresh()
        deadline = time.monotonic() + 5
        while len(events) < 5 and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        cancel()
        lease.revoke()
        assert errors == []
        assert [(e.key, e.value) for e in events] == [(f"{prefix}{i}", big) for i in range(5)]
        channels = [e.channel for e in kv._etcd.client.endpoints.values()]
        assert channels and not any(c.made() for c in channels), "no gRPC channel was made"
    finally:
        kv.delete(settings.etcd_prefix, prefix=True)
        kv.close()


@pytest.mark.parametrize("transport", ["lean", "grpc"])
def test_closing_the_store_ends_its_open_watches(settings: Settings, transport: str) -> None:
    kv = EtcdKV(settings.with_(etcd_transport=transport))
    prefix = raw_key(settings, f"closing-{transport}/")

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"etcd-watch {prefix}"]

    kv.watch_prefix(prefix, lambda events: None, lambda exc: None)
    kv.put(prefix + "k", b"v")  # (the watch is open: an event or not, its thread runs)
    assert threads(), "the watch runs"
    kv.close()
    deadline = time.monotonic() + 3
    while threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not threads(), "close() ended the watch"


def test_kv_watch_prefix_delivers_put_and_delete_events(
    kv: EtcdKV, settings: Settings
) -> None:
    prefix = raw_key(settings, "w/")
    events: list[WatchEvent] = []
    errors: list[Exception] = []
    got_delete = threading.Event()

    def on_events(batch: list[WatchEvent]) -> None:
        events.extend(batch)
        if any(e.value is None for e in batch):
            got_delete.set()

    start = kv.revision() + 1
    cancel = kv.watch_prefix(prefix, on_events, errors.append, start_revision=start)
    try:
        put_rev = kv.put(prefix + "a", b"hello")
        kv.put(raw_key(settings, "not-watched"), b"x")
        kv.delete(prefix + "a")

        assert got_delete.wait(5), f"events so far: {events}"
    finally:
        cancel()

    assert [(e.key, e.value) for e in events] == [(prefix + "a", b"hello"), (prefix + "a", None)]
    assert events[0].revision == put_rev
    assert events[1].prev_value == b"hello"
    assert errors == []


def test_kv_watch_from_a_past_revision_replays_the_put(kv: EtcdKV, settings: Settings) -> None:
    prefix = raw_key(settings, "replay/")
    put_rev = kv.put(prefix + "k", b"earlier")
    arrived = threading.Event()
    events: list[WatchEvent] = []

    def on_events(batch: list[WatchEvent]) -> None:
        events.extend(batch)
        arrived.set()

    cancel = kv.watch_prefix(prefix, on_events, lambda exc: None, start_revision=put_rev)
    try:
        assert arrived.wait(5)
    finally:
        cancel()

    assert (events[0].key, events[0].value, events[0].revision) == (
        prefix + "k", b"earlier", put_rev
    )


def test_bad_endpoint_is_a_store_error(settings: Settings) -> None:
    with pytest.raises(StoreError, match="host:port"):
        EtcdKV(settings.with_(etcd_endpoints=("no-port",)))
