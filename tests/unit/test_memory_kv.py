"""droplet.store.memory.MemoryKV: the in-process KV must keep etcd's semantics."""

from __future__ import annotations

import pytest

from droplet.errors import StoreError
from droplet.store.kv import Delete, ModRevisionBelow, Put, ValueIs, VersionIs, WatchEvent
from droplet.store.memory import MemoryKV


class Recorder:
    """A watch callback that keeps every batch of events it is given."""

    def __init__(self) -> None:
        self.batches: list[list[WatchEvent]] = []
        self.errors: list[Exception] = []

    def __call__(self, events: list[WatchEvent]) -> None:
        self.batches.append(list(events))

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    @property
    def events(self) -> list[WatchEvent]:
        return [e for batch in self.batches for e in batch]


# -- put, get, delete, prefix ----------------------------------------------------------------


def test_get_of_a_missing_key_is_none() -> None:
    assert MemoryKV().get("/nope") is None


def test_put_then_get_and_overwrite() -> None:
    kv = MemoryKV()
    kv.put("/a", b"1")
    kv.put("/a", b"2")

    assert kv.get("/a") == b"2"


def test_put_returns_increasing_revisions() -> None:
    kv = MemoryKV()
    start = kv.revision()

    r1 = kv.put("/a", b"1")
    r2 = kv.put("/b", b"2")
    r3 = kv.put("/a", b"3")

    assert start < r1 < r2 < r3
    assert kv.revision() == r3


def test_delete_returns_the_number_deleted() -> None:
    kv = MemoryKV()
    kv.put("/a", b"1")

    assert kv.delete("/a") == 1
    assert kv.get("/a") is None
    assert kv.delete("/a") == 0


def test_delete_prefix_removes_only_keys_under_it() -> None:
    kv = MemoryKV()
    for key in ("/p/1", "/p/2", "/p/sub/3", "/q/1", "/p"):
        kv.put(key, b"v")

    assert kv.delete("/p/", prefix=True) == 3

    items, _ = kv.get_prefix("/")
    assert set(items) == {"/q/1", "/p"}


def test_get_prefix_returns_items_and_the_current_revision() -> None:
    kv = MemoryKV()
    kv.put("/x/a", b"1")
    rev = kv.put("/x/b", b"2")
    kv.put("/y/c", b"3")

    items, seen = kv.get_prefix("/x/")

    assert items == {"/x/a": b"1", "/x/b": b"2"}
    assert seen == kv.revision() and seen > rev


def test_get_entries_returns_present_keys_with_their_mod_revisions() -> None:
    kv = MemoryKV()
    ra = kv.put("/a", b"1")
    rb = kv.put("/b", b"2")

    entries = kv.get_entries(["/a", "/b", "/missing"])

    assert set(entries) == {"/a", "/b"}
    assert (entries["/a"].value, entries["/a"].mod_revision) == (b"1", ra)
    assert (entries["/b"].value, entries["/b"].mod_revision) == (b"2", rb)


def test_get_entries_at_an_older_revision_returns_the_old_value() -> None:
    kv = MemoryKV()
    r1 = kv.put("/k", b"old")
    kv.put("/k", b"new")
    r_other = kv.put("/other", b"x")
    kv.delete("/other")

    then = kv.get_entries(["/k", "/other"], revision=r1)
    later = kv.get_entries(["/k", "/other"], revision=r_other)
    now = kv.get_entries(["/k", "/other"])

    assert then == {"/k": then["/k"]} and then["/k"].value == b"old"
    assert then["/k"].mod_revision == r1
    assert later["/k"].value == b"new" and later["/other"].value == b"x"
    assert set(now) == {"/k"} and now["/k"].value == b"new"


def test_get_entries_at_a_revision_before_a_delete_still_sees_the_key() -> None:
    kv = MemoryKV()
    r = kv.put("/k", b"v")
    kv.delete("/k")

    assert kv.get_entries(["/k"], revision=r)["/k"].value == b"v"
    assert kv.get_entries(["/k"]) == {}


# -- transactions ----------------------------------------------------------------------------


def test_txn_without_compares_applies_success_in_one_revision() -> None:
    kv = MemoryKV()
    kv.put("/gone", b"x")

    ok, rev = kv.txn([], [Put("/a", b"1"), Put("/b", b"2"), Delete("/gone")])

    assert ok is True
    entries = kv.get_entries(["/a", "/b"])
    assert entries["/a"].mod_revision == entries["/b"].mod_revision == rev
    assert kv.get("/gone") is None


def test_version_is_zero_means_absent() -> None:
    kv = MemoryKV()

    ok, _ = kv.txn([VersionIs("/k", 0)], [Put("/k", b"first")], [Put("/lost", b"1")])
    assert ok is True and kv.get("/k") == b"first"

    ok, _ = kv.txn([VersionIs("/k", 0)], [Put("/k", b"second")], [Put("/lost", b"1")])
    assert ok is False
    assert kv.get("/k") == b"first"
    assert kv.get("/lost") == b"1", "the failure branch ran"


def test_version_counts_puts_and_restarts_after_delete() -> None:
    kv = MemoryKV()
    kv.put("/k", b"1")
    kv.put("/k", b"2")

    assert kv.txn([VersionIs("/k", 2)], [])[0] is True
    assert kv.txn([VersionIs("/k", 1)], [])[0] is False

    kv.delete("/k")
    kv.put("/k", b"3")
    assert kv.txn([VersionIs("/k", 1)], [])[0] is True


def test_value_is_success_and_failure() -> None:
    kv = MemoryKV()
    kv.put("/k", b"expected")

    ok, _ = kv.txn([ValueIs("/k", b"expected")], [Put("/k", b"swapped")])
    assert ok is True and kv.get("/k") == b"swapped"

    ok, _ = kv.txn([ValueIs("/k", b"expected")], [Put("/k", b"again")], [Put("/f", b"1")])
    assert ok is False and kv.get("/k") == b"swapped" and kv.get("/f") == b"1"


def test_value_is_on_a_missing_key_fails_even_for_empty_bytes() -> None:
    kv = MemoryKV()

    ok, _ = kv.txn([ValueIs("/absent", b"")], [Put("/x", b"1")])

    assert ok is False
    assert kv.get("/x") is None


def test_mod_revision_below() -> None:
    kv = MemoryKV()
    written = kv.put("/k", b"v")

    assert kv.txn([ModRevisionBelow("/k", written + 1)], [])[0] is True
    assert kv.txn([ModRevisionBelow("/k", written)], [])[0] is False
    assert kv.txn([ModRevisionBelow("/absent", 1)], [])[0] is True


def test_every_compare_must_hold() -> None:
    kv = MemoryKV()
    kv.put("/a", b"1")

    ok, _ = kv.txn([VersionIs("/a", 1), ValueIs("/a", b"wrong")], [Put("/s", b"1")])

    assert ok is False
    assert kv.get("/s") is None


def test_txn_that_changes_nothing_keeps_the_revision() -> None:
    kv = MemoryKV()
    kv.put("/a", b"1")
    before = kv.revision()

    ok, rev = kv.txn([VersionIs("/a", 99)], [Put("/a", b"2")])

    assert ok is False
    assert rev == before == kv.revision()


def test_delete_prefix_inside_a_txn() -> None:
    kv = MemoryKV()
    kv.put("/d/1", b"1")
    kv.put("/d/2", b"2")

    ok, rev = kv.txn([], [Delete("/d/", prefix=True), Put("/e/3", b"3")])

    assert ok is True
    assert kv.get_prefix("/d/")[0] == {}
    assert kv.get("/e/3") == b"3"
    assert kv.get_entries(["/e/3"])["/e/3"].mod_revision == rev


def test_deleting_a_missing_key_keeps_the_revision() -> None:
    kv = MemoryKV()
    kv.put("/present", b"1")
    before = kv.revision()

    assert kv.delete("/absent") == 0
    assert kv.revision() == before


def test_txn_with_an_unknown_lease_changes_nothing() -> None:
    kv = MemoryKV()
    before = kv.revision()

    with pytest.raises(StoreError):
        kv.txn([], [Put("/first", b"1"), Put("/second", b"2", lease=12345)])

    assert kv.get("/first") is None
    assert kv.revision() == before


@pytest.mark.parametrize(
    "ops",
    [
        [Put("/dup", b"1"), Put("/dup", b"2")],
        [Delete("/d/", prefix=True), Put("/d/x", b"1")],
    ],
    ids=["put-put", "delete-prefix-put"],
)
def test_txn_naming_a_key_twice_is_refused_like_etcd(ops: list[Put | Delete]) -> None:
    kv = MemoryKV()

    with pytest.raises(StoreError):
        kv.txn([], ops)


# -- leases ----------------------------------------------------------------------------------


def test_lease_ids_are_distinct() -> None:
    kv = MemoryKV()

    assert kv.grant_lease(10).id != kv.grant_lease(10).id


def test_expire_lease_deletes_attached_keys_only() -> None:
    kv = MemoryKV()
    lease = kv.grant_lease(10)
    other = kv.grant_lease(10)
    kv.put("/l/a", b"1", lease=lease.id)
    kv.put("/l/b", b"2", lease=lease.id)
    kv.put("/l/other", b"3", lease=other.id)
    kv.put("/l/plain", b"4")

    kv.expire_lease(lease.id)

    assert kv.get_prefix("/l/")[0] == {"/l/other": b"3", "/l/plain": b"4"}


def test_expired_lease_notifies_watchers_with_value_none() -> None:
    kv = MemoryKV()
    lease = kv.grant_lease(10)
    kv.put("/w/a", b"1", lease=lease.id)
    seen = Recorder()
    kv.watch_prefix("/w/", seen, seen.on_error)

    kv.expire_lease(lease.id)

    assert [(e.key, e.value, e.prev_value) for e in seen.events] == [("/w/a", None, b"1")]
    assert seen.events[0].revision == kv.revision()


def test_refresh_after_expiry_raises_and_put_with_it_is_refused() -> None:
    kv = MemoryKV()
    lease = kv.grant_lease(10)
    lease.refresh()  # alive: no error

    lease.revoke()

    with pytest.raises(StoreError):
        lease.refresh()
    with pytest.raises(StoreError):
        kv.put("/k", b"v", lease=lease.id)


def test_revoke_deletes_the_keys_like_expiry() -> None:
    kv = MemoryKV()
    lease = kv.grant_lease(10)
    kv.put("/k", b"v", lease=lease.id)

    lease.revoke()

    assert kv.get("/k") is None


def test_rewriting_a_key_without_a_lease_detaches_it() -> None:
    kv = MemoryKV()
    lease = kv.grant_lease(10)
    kv.put("/k", b"leased", lease=lease.id)
    kv.put("/k", b"kept")

    kv.expire_lease(lease.id)

    assert kv.get("/k") == b"kept"


# -- watches ---------------------------------------------------------------------------------


def test_watch_prefix_sees_puts_and_deletes_under_its_prefix_only() -> None:
    kv = MemoryKV()
    seen = Recorder()
    kv.watch_prefix("/w/", seen, seen.on_error)

    r1 = kv.put("/w/a", b"1")
    kv.put("/elsewhere", b"x")
    r2 = kv.put("/w/a", b"2")
    kv.delete("/w/a")
    r3 = kv.revision()

    assert [(e.key, e.value, e.revision, e.prev_value) for e in seen.events] == [
        ("/w/a", b"1", r1, None),
        ("/w/a", b"2", r2, b"1"),
        ("/w/a", None, r3, b"2"),
    ]
    assert seen.errors == []


def test_one_txn_is_one_batch_of_events() -> None:
    kv = MemoryKV()
    seen = Recorder()
    kv.watch_prefix("/w/", seen, seen.on_error)

    _, rev = kv.txn([], [Put("/w/a", b"1"), Put("/w/b", b"2"), Put("/x", b"3")])

    assert len(seen.batches) == 1
    assert [(e.key, e.revision) for e in seen.batches[0]] == [("/w/a", rev), ("/w/b", rev)]


def test_failed_txn_without_failure_ops_notifies_nobody() -> None:
    kv = MemoryKV()
    kv.put("/w/a", b"1")
    seen = Recorder()
    kv.watch_prefix("/w/", seen, seen.on_error)

    kv.txn([VersionIs("/w/a", 0)], [Put("/w/a", b"2")])

    assert seen.batches == []


def test_several_watchers_each_get_their_events() -> None:
    kv = MemoryKV()
    a, b = Recorder(), Recorder()
    kv.watch_prefix("/w/", a, a.on_error)
    kv.watch_prefix("/w/x", b, b.on_error)

    kv.put("/w/x1", b"1")
    kv.put("/w/y1", b"2")

    assert [e.key for e in a.events] == ["/w/x1", "/w/y1"]
    assert [e.key for e in b.events] == ["/w/x1"]


def test_cancel_stops_callbacks() -> None:
    kv = MemoryKV()
    seen = Recorder()
    cancel = kv.watch_prefix("/w/", seen, seen.on_error)
    kv.put("/w/a", b"1")

    cancel()
    kv.put("/w/b", b"2")
    cancel()  # cancelling twice is harmless

    assert [e.key for e in seen.events] == ["/w/a"]


def test_close_drops_every_watch() -> None:
    kv = MemoryKV()
    seen = Recorder()
    kv.watch_prefix("/", seen, seen.on_error)

    kv.close()
    kv.put("/a", b"1")

    assert seen.batches == []
