"""The worker's cache of stored values: reads served from memory, kept current by a watch.

Values a worker reads or writes stay here (least recently used go first, bounded by entries
and bytes). A watch on the values prefix replaces or drops an entry as soon as anyone writes
or deletes its key, so a cached read is at most one watch delay behind etcd. The cached keys
are reported in the worker's status, which is what the scheduler's locality placement uses.
Call outcomes under results/ are not cached: they are read once, by the client.

Without its watch the cache cannot be trusted: when the watch breaks, the cache is emptied and
serves nothing (reads go to etcd) until a new watch runs, and a read that started before the
break never fills the cache after it (an epoch counter tells).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from droplet.proto import pb
from droplet.store.kv import WatchEvent
from droplet.store.values import ValueStore

REPORTED_KEYS = 256
# What the keys a status record names may take together: nothing bounds a key's length, and
# 256 keys of 8 KB made the record larger than etcd takes in one request (1.5 MiB); each write
# of it was refused, which the membership keepalive took for a lost lease (the fleet then
# counted the worker dead). A key longer than what is left is not named (no locality for it).
REPORTED_KEY_BYTES = 64 * 1024


_RECENT_WRITES = 4096


@dataclass(frozen=True)
class Cached:
    value: pb.Value
    size: int
    revision: int


class ValueCache:
    def __init__(self, values: ValueStore, max_entries: int, max_bytes: int) -> None:
        self._values = values
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        # Revisions of recent writes to keys not cached: a read that raced one is not cached.
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._cancel: Callable[[], None] | None = None
        self.hits = 0
        self.misses = 0
        # The store revision this cache is known to be current with (sessions compare it).
        self.revision = 0
        self.healthy = False
        self._epoch = 0
        self._closed = False

    def start(self) -> None:
        prefix = self._values.keys.values
        start = self._values.kv.revision()
        cancel = self._values.kv.watch_prefix(
            prefix, self._on_events, self._on_error, start_revision=start + 1
        )
        with self._lock:
            closed = self._closed  # a restart racing close(): its watch must not outlive it
            if not closed:
                self._cancel = cancel
                self._entries.clear()  # anything stored while the watch was away
                self._bytes = 0
                self._epoch += 1
                self.revision = start
                self.healthy = True
        if closed:
            cancel()

    def fresh_for(self, min_revision: int) -> bool:
        """True when a read from the cache is at least as new as min_revision."""
        return self.healthy and self.revision >= min_revision

    def close(self) -> None:
        with self._lock:
            self._closed = True
            cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def get_values(self, keys: Sequence[str]) -> dict[str, pb.Value]:
        """Cached values, the rest read from etcd in one request (and cached)."""
        return {key: value for key, (value, _) in self.read(keys).items()}

    def read(self, keys: Sequence[str]) -> dict[str, tuple[pb.Value, int]]:
        """Like get_values, with the revision each value was written at."""
        found: dict[str, tuple[pb.Value, int]] = {}
        missing: list[str] = []
        epoch = self._epoch
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    missing.append(key)
                else:
                    self._entries.move_to_end(key)
                    found[key] = (entry.value, entry.revision)
            self.hits += len(found)
            self.misses += len(missing)
        if missing:
            for key, stored in self._values.read(missing).items():
                if stored.user_value:
                    self.store(key, stored.value, stored.mod_revision, epoch)
                found[key] = (stored.value, stored.mod_revision)
        return found

    def store(self, key: str, value: pb.Value, revision: int, epoch: int | None = None) -> None:
        size = len(value.body)
        if size > self._max_bytes // 4:
            return  # one huge value would push everything else out
        with self._lock:
            if not self.healthy or (epoch is not None and epoch != self._epoch):
                return  # the watch broke since this value was read
            if self._recent.get(key, 0) > revision:
                return  # written again since this copy was read
            current = self._entries.get(key)
            if current is not None and current.revision > revision:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = Cached(value, size, revision)
            self._bytes += size
            while self._entries and (
                len(self._entries) > self._max_entries or self._bytes > self._max_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size

    def drop(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size

    def keys(self, limit: int = REPORTED_KEYS, budget: int = REPORTED_KEY_BYTES) -> list[str]:
        """The most recently used keys, for the status record: up to `limit`, taking up to
        `budget` bytes together, oldest first."""
        with self._lock:
            recent = list(self._entries)[-limit:]
        named: list[str] = []
        for key in reversed(recent):
            size = len(key.encode("utf-8", "surrogatepass"))
            if size <= budget:
                budget -= size
                named.append(key)
        named.reverse()
        return named

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def _on_events(self, events: list[WatchEvent]) -> None:
        prefix = len(self._values.keys.values)
        for event in events:
            self.revision = max(self.revision, event.revision)
            key = event.key[prefix:]
            head = self._head(event)
            if key in self._entries and head is not None and head.type != pb.CHUNKED:
                self.store(key, head, event.revision)
                continue
            self.drop(key)
            with self._lock:
                self._recent[key] = event.revision
                self._recent.move_to_end(key)
                if len(self._recent) > _RECENT_WRITES:
                    self._recent.popitem(last=False)

    def _head(self, event: WatchEvent) -> pb.Value | None:
        if event.value is None:
            return None
        try:
            return self._values.blobs.open_head(event.key, event.value)
        except Exception:
            return None  # unverifiable: dropped, and read (and refused) from etcd if asked

    def _on_error(self, error: Exception) -> None:
        """Without the watch nothing here can be trusted: start over, and watch again."""
        with self._lock:
            self.healthy = False
            self._epoch += 1
            self._entries.clear()
            self._bytes = 0
            self.revision = 0
        timer = threading.Timer(0.5, self._restart)
        timer.daemon = True
        timer.start()

    def _restart(self) -> None:
        if self._closed:
            return
        try:
            self.start()
        except Exception as exc:
            self._on_error(exc)
