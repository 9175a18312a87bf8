"""droplet.store.mirror.PrefixMirror over MemoryKV: initial read, watch updates, local writes."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from droplet.errors import StoreError
from droplet.store.kv import ErrorCallback, WatchCallback
from droplet.store.memory import MemoryKV
from droplet.store.mirror import PrefixMirror

PREFIX = "/m/pins/"


class Changes:
    """A listener that records (name, value) calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes | None]] = []

    def __call__(self, name: str, value: bytes | None) -> None:
        self.seen.append((name, value))


def test_start_reads_the_initial_items_keyed_by_name() -> None:
    kv = MemoryKV()
    kv.put(PREFIX + "w1", b"a")
    kv.put(PREFIX + "w2", b"b")
    kv.put("/m/other/w3", b"c")

    mirror = PrefixMirror(kv, PREFIX).start()

    assert mirror.items() == {"w1": b"a", "w2": b"b"}
    assert mirror.get("w1") == b"a"
    assert mirror.get("w3") is None
    assert mirror.revision == kv.revision()
    assert mirror.healthy.is_set()


def test_items_is_a_snapshot() -> None:
    kv = MemoryKV()
    kv.put(PREFIX + "w1", b"a")
    mirror = PrefixMirror(kv, PREFIX).start()

    snapshot = mirror.items()
    snapshot["w1"] = b"changed"

    assert mirror.get("w1") == b"a"


def test_listeners_added_before_start_see_the_initial_items() -> None:
    kv = MemoryKV()
    kv.put(PREFIX + "w1", b"a")
    changes = Changes()
    mirror = PrefixMirror(kv, PREFIX)
    mirror.on_change(changes)

    mirror.start()

    assert changes.seen == [("w1", b"a")]


def test_puts_reach_items_and_listeners_through_the_watch() -> None:
    kv = MemoryKV()
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()
    mirror.on_change(changes)

    kv.put(PREFIX + "w1", b"v1")
    rev = kv.put(PREFIX + "w1", b"v2")
    kv.put("/m/elsewhere", b"x")

    assert mirror.items() == {"w1": b"v2"}
    assert changes.seen == [("w1", b"v1"), ("w1", b"v2")]
    assert mirror.revision == rev


def test_deletes_reach_items_and_listeners_as_none() -> None:
    kv = MemoryKV()
    kv.put(PREFIX + "w1", b"a")
    kv.put(PREFIX + "w2", b"b")
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()
    mirror.on_change(changes)

    kv.delete(PREFIX + "w1")

    assert mirror.items() == {"w2": b"b"}
    assert changes.seen == [("w1", None)]


def test_lease_expiry_removes_items() -> None:
    kv = MemoryKV()
    lease = kv.grant_lease(10)
    kv.put(PREFIX + "w1", b"a", lease=lease.id)
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()
    mirror.on_change(changes)

    kv.expire_lease(lease.id)

    assert mirror.items() == {}
    assert changes.seen == [("w1", None)]


def test_rewriting_the_same_value_does_not_notify() -> None:
    kv = MemoryKV()
    kv.put(PREFIX + "w1", b"same")
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()
    mirror.on_change(changes)

    kv.put(PREFIX + "w1", b"same")

    assert changes.seen == []


def test_apply_local_is_visible_at_once_and_the_echo_is_not_notified_twice() -> None:
    kv = MemoryKV()
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()
    mirror.on_change(changes)

    mirror.apply_local("w1", b"mine")
    assert mirror.get("w1") == b"mine"
    assert kv.get(PREFIX + "w1") is None, "apply_local does not write the store"

    kv.put(PREFIX + "w1", b"mine")  # the write itself, echoed by the watch

    assert changes.seen == [("w1", b"mine")]


def test_apply_local_delete() -> None:
    kv = MemoryKV()
    kv.put(PREFIX + "w1", b"a")
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()
    mirror.on_change(changes)

    mirror.apply_local("w1", None)
    mirror.apply_local("absent", None)

    assert mirror.items() == {}
    assert changes.seen == [("w1", None)]


def test_a_failing_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    kv = MemoryKV()
    mirror = PrefixMirror(kv, PREFIX).start()
    changes = Changes()

    def broken(name: str, value: bytes | None) -> None:
        raise RuntimeError("listener bug")

    mirror.on_change(broken)
    mirror.on_change(changes)

    kv.put(PREFIX + "w1", b"a")

    assert changes.seen == [("w1", b"a")]
    assert mirror.get("w1") == b"a"
    assert "listener failed" in caplog.text


def test_close_cancels_the_watch() -> None:
    kv = MemoryKV()
    mirror = PrefixMirror(kv, PREFIX).start()

    mirror.close()
    kv.put(PREFIX + "w1", b"a")

    assert mirror.items() == {}


class BreakableKV(MemoryKV):
    """A MemoryKV whose watches can be broken by the test, as an etcd restart would."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[ErrorCallback] = []
        self.cancels: list[Callable[[], None]] = []

    def watch_prefix(
        self,
        prefix: str,
        on_events: WatchCallback,
        on_error: ErrorCallback,
        start_revision: int = 0,
    ) -> Callable[[], None]:
        cancel = super().watch_prefix(prefix, on_events, on_error, start_revision)
        self.errors.append(on_error)
        self.cancels.append(cancel)
        return cancel


def test_a_lost_watch_resyncs_and_catches_up_on_missed_changes() -> None:
    kv = BreakableKV()
    kv.put(PREFIX + "stays", b"1")
    kv.put(PREFIX + "goes", b"2")
    mirror = PrefixMirror(kv, PREFIX, retry_s=0.01)
    changes = Changes()
    mirror.start()
    mirror.on_change(changes)
    synced = threading.Event()
    mirror.on_change(lambda name, value: synced.set() if name == "new" else None)

    kv.cancels[-1]()  # changes from now on are missed by the watch...
    kv.delete(PREFIX + "goes")
    kv.put(PREFIX + "new", b"3")
    assert mirror.items() == {"stays": b"1", "goes": b"2"}
    kv.errors[-1](StoreError("watch stream ended"))  # ...until its loss is reported

    assert synced.wait(5), "the mirror re-read the prefix"
    assert mirror.healthy.wait(5)
    assert mirror.items() == {"stays": b"1", "new": b"3"}
    assert sorted(changes.seen, key=str) == sorted([("goes", None), ("new", b"3")], key=str)
    assert len(kv.errors) == 2, "a new watch was opened"

    kv.put(PREFIX + "after", b"4")
    assert mirror.get("after") == b"4"
    mirror.close()


def test_an_error_after_close_does_not_resync() -> None:
    kv = BreakableKV()
    mirror = PrefixMirror(kv, PREFIX, retry_s=0.01).start()

    mirror.close()
    kv.errors[-1](StoreError("late"))

    assert mirror.healthy.is_set(), "a closed mirror ignores errors"
    assert len(kv.errors) == 1
