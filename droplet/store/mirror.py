"""A live in-memory copy of one etcd prefix: read once, then kept current by a watch.

Schedulers and workers route every call from mirrors (workers, pins, DAGs, functions), so the
hot path never reads etcd. A broken watch (etcd restart, compaction) is re-established with a
full re-read, so a mirror converges again after any outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from droplet.store.kv import KV, WatchEvent

log = logging.getLogger(__name__)

Listener = Callable[[str, bytes | None], None]


class PrefixMirror:
    def __init__(self, kv: KV, prefix: str, retry_s: float = 0.5) -> None:
        self._kv = kv
        self.prefix = prefix
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._items: dict[str, bytes] = {}
        self._listeners: list[Listener] = []
        self._cancel: Callable[[], None] | None = None
        self._closed = threading.Event()
        self.revision = 0
        self.healthy = threading.Event()

    def start(self) -> PrefixMirror:
        self._sync()
        return self

    def items(self) -> dict[str, bytes]:
        """A snapshot keyed by the name after the prefix."""
        with self._lock:
            return dict(self._items)

    def get(self, name: str) -> bytes | None:
        return self._items.get(name)

    def on_change(self, listener: Listener) -> None:
        """listener(name, value) after each change; value None means deleted."""
        self._listeners.append(listener)

    def apply_local(self, name: str, value: bytes | None) -> None:
        """Reflects this process's own write at once instead of waiting for the watch."""
        self._set(name, value)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            cancel, self._cancel = self._cancel, None
        if cancel:
            cancel()

    def _sync(self) -> None:
        items, revision = self._kv.get_prefix(self.prefix)
        fresh = {k[len(self.prefix):]: v for k, v in items.items()}
        with self._lock:
            old = self._items
            self._items = fresh
            self.revision = revision
        for name in old.keys() - fresh.keys():
            self._notify(name, None)
        for name, value in fresh.items():
            if old.get(name) != value:
                self._notify(name, value)
        cancel: Callable[[], None] | None = self._kv.watch_prefix(
            self.prefix, self._on_events, self._on_error, start_revision=revision + 1
        )
        with self._lock:  # a re-sync racing close(): its new watch must not outlive it
            if not self._closed.is_set():
                self._cancel, cancel = cancel, None
        if cancel is not None:
            cancel()
            return
        self.healthy.set()

    def _on_events(self, events: list[WatchEvent]) -> None:
        for event in events:
            self.revision = max(self.revision, event.revision)
            self._set(event.key[len(self.prefix):], event.value)

    def _set(self, name: str, value: bytes | None) -> None:
        with self._lock:
            if self._items.get(name) == value:
                return
            if value is None:
                self._items.pop(name, None)
            else:
                self._items[name] = value
        self._notify(name, value)

    def _notify(self, name: str, value: bytes | None) -> None:
        for listener in self._listeners:
            try:
                listener(name, value)
            except Exception:
                log.exception("mirror listener failed for %s%s", self.prefix, name)

    def _on_error(self, error: Exception) -> None:
        if self._closed.is_set():
            return
        self.healthy.clear()
        log.warning("watch on %s lost (%s); re-syncing", self.prefix, error)
        threading.Thread(target=self._resync_loop, daemon=True, name="mirror-resync").start()

    def _resync_loop(self) -> None:
        while not self._closed.wait(self._retry_s):
            try:
                self._sync()
                log.info("watch on %s re-established", self.prefix)
                return
            except Exception as exc:
                log.debug("re-sync of %s failed: %s", self.prefix, exc)
