"""An in-process `KV` with etcd's semantics (revisions, transactions, leases, watches).

For narrow unit tests of handlers and caches only: everything end to end runs on real etcd.
Watch callbacks run synchronously in the writing thread; leases expire only when a test calls
`expire_lease`, so tests stay deterministic. `fail_when` injects store failures: the in-process
fault tests make a chosen write fail at a chosen step of the message cycle.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from droplet.errors import CompactedError, StoreError
from droplet.store.kv import (
    MAX_TXN_OPS,
    Compare,
    Delete,
    Entry,
    ErrorCallback,
    ModRevisionBelow,
    ModRevisionIs,
    Op,
    Put,
    ValueIs,
    VersionIs,
    WatchCallback,
    WatchEvent,
)


@dataclass
class _Record:
    value: bytes
    mod_revision: int
    version: int
    lease: int | None
    create_revision: int = 0

    def entry(self) -> Entry:
        return Entry(self.value, self.mod_revision, self.create_revision, self.version)


class MemoryLease:
    def __init__(self, kv: MemoryKV, lease_id: int) -> None:
        self._kv = kv
        self._id = lease_id

    @property
    def id(self) -> int:
        return self._id

    def refresh(self) -> None:
        if self._id not in self._kv.leases:
            raise StoreError(f"lease {self._id} expired")

    def revoke(self) -> None:
        self._kv.expire_lease(self._id)


class MemoryKV:
    def __init__(self) -> None:
        self._data: dict[str, _Record] = {}
        self._history: list[tuple[int, str, _Record | None]] = []
        self.compacted = 0  # reads below this revision fail, as after etcd's compaction
        # Fault injection: called with (operation, ops) before every request; True -> fails.
        self.fail_when: Callable[[str, Sequence[Op]], bool] | None = None
        self._revision = 1
        self._lock = threading.RLock()
        self._watches: dict[int, tuple[str, WatchCallback]] = {}
        self._ids = itertools.count(1)
        self.leases: set[int] = set()

    def _maybe_fail(self, operation: str, ops: Sequence[Op] = ()) -> None:
        if self.fail_when is not None and self.fail_when(operation, ops):
            raise StoreError(f"injected failure of {operation}")

    def get(self, key: str) -> bytes | None:
        self._maybe_fail("get")
        with self._lock:
            rec = self._data.get(key)
            return rec.value if rec else None

    def get_entries(self, keys: Sequence[str], revision: int = 0) -> dict[str, Entry]:
        self._maybe_fail("get")
        with self._lock:
            if not revision:
                return {k: r.entry() for k in keys if (r := self._data.get(k))}
            if revision < self.compacted:
                raise CompactedError(f"revision {revision} has been compacted")
            found: dict[str, Entry] = {}
            for rev, key, record in self._history:
                if rev > revision or key not in keys:
                    continue
                if record is None:
                    found.pop(key, None)
                else:
                    found[key] = record.entry()
            return found

    def compact(self, revision: int) -> None:
        """Forgets history below revision (reads at older revisions fail)."""
        with self._lock:
            self.compacted = revision

    def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        self._maybe_fail("get")
        with self._lock:
            items = {k: r.value for k, r in self._data.items() if k.startswith(prefix)}
            return items, self._revision

    def count_prefix(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for k in self._data if k.startswith(prefix))

    def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        return self.txn([], [Put(key, value, lease)])[1]

    def delete(self, key: str, prefix: bool = False) -> int:
        with self._lock:
            count = len(self._matching(key, prefix))
            self.txn([], [Delete(key, prefix)])
            return count

    def txn(
        self, compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op] = ()
    ) -> tuple[bool, int]:
        ok, revision, _ = self._txn(list(compares), list(success), list(failure))
        return ok, revision

    def txn_previous(
        self, compares: Iterable[Compare], success: Iterable[Op],
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[bool, int, dict[str, bytes]]:
        if meanwhile is not None:  # as on etcd: run before the outcome is known
            meanwhile()
        return self._txn(list(compares), list(success), [])

    def _txn(
        self, compares: list[Compare], success: list[Op], failure: list[Op]
    ) -> tuple[bool, int, dict[str, bytes]]:
        self._maybe_fail("txn", success)
        if max(len(compares), len(success), len(failure)) > MAX_TXN_OPS:
            raise StoreError("etcdserver: too many operations in txn request")
        for ops in (success, failure):
            self._check(ops)
        with self._lock:
            ok = all(self._holds(c) for c in compares)
            ops = success if ok else failure
            previous = {
                k: self._data[k].value
                for op in ops
                for k in self._matching(op.key, isinstance(op, Delete) and op.prefix)
            }
            events = self._apply(ops)
            revision = self._revision
        self._notify(events)
        return ok, revision, previous

    def _check(self, ops: Sequence[Op]) -> None:
        """Refuses what etcd refuses, before anything is applied (a txn is atomic)."""
        keys = [op.key for op in ops]
        prefixes = [op.key for op in ops if isinstance(op, Delete) and op.prefix]
        overlapping = any(k.startswith(p) and k != p for k in keys for p in prefixes)
        if len(set(keys)) != len(keys) or overlapping:
            raise StoreError("etcd refuses a transaction naming a key twice")
        for op in ops:
            if isinstance(op, Put) and op.lease is not None and op.lease not in self.leases:
                raise StoreError(f"lease {op.lease} not found")

    def revision(self) -> int:
        return self._revision

    def grant_lease(self, ttl_s: int) -> MemoryLease:
        lease_id = next(self._ids)
        self.leases.add(lease_id)
        return MemoryLease(self, lease_id)

    def expire_lease(self, lease_id: int) -> None:
        with self._lock:
            self.leases.discard(lease_id)
            doomed = [Delete(k) for k, r in self._data.items() if r.lease == lease_id]
            events = self._apply(doomed)
        self._notify(events)

    def watch_prefix(
        self,
        prefix: str,
        on_events: WatchCallback,
        on_error: ErrorCallback,
        start_revision: int = 0,
    ) -> Callable[[], None]:
        watch_id = next(self._ids)
        self._watches[watch_id] = (prefix, on_events)
        return lambda: self._watches.pop(watch_id, None) and None

    def close(self) -> None:
        self._watches.clear()

    def _matching(self, key: str, prefix: bool) -> list[str]:
        if prefix:
            return [k for k in self._data if k.startswith(key)]
        return [key] if key in self._data else []

    def _holds(self, c: Compare) -> bool:
        rec = self._data.get(c.key)
        if isinstance(c, VersionIs):
            return (rec.version if rec else 0) == c.version
        if isinstance(c, ValueIs):
            return rec is not None and rec.value == c.value
        if isinstance(c, ModRevisionBelow):
            return (rec.mod_revision if rec else 0) < c.revision
        if isinstance(c, ModRevisionIs):
            return (rec.mod_revision if rec else 0) == c.revision
        raise TypeError(f"unknown compare {c!r}")

    def _apply(self, ops: Sequence[Op]) -> list[WatchEvent]:
        changes = any(
            isinstance(op, Put) or self._matching(op.key, op.prefix) for op in ops
        )
        if not changes:
            return []
        self._revision += 1
        rev = self._revision
        events = []
        for op in ops:
            if isinstance(op, Put):
                old = self._data.get(op.key)
                version = old.version + 1 if old else 1
                created = old.create_revision if old else rev
                record = _Record(op.value, rev, version, op.lease, created)
                self._data[op.key] = record
                self._history.append((rev, op.key, record))
                events.append(WatchEvent(op.key, op.value, rev, old.value if old else None,
                                         created, version))
            else:
                for key in self._matching(op.key, op.prefix):
                    old = self._data.pop(key)
                    self._history.append((rev, key, None))
                    events.append(WatchEvent(key, None, rev, old.value))
        return events

    def _notify(self, events: list[WatchEvent]) -> None:
        if not events:
            return
        for prefix, callback in list(self._watches.values()):
            mine = [e for e in events if e.key.startswith(prefix)]
            if mine:
                callback(mine)
