"""A mirror or a value cache closed while it is re-establishing its watch (after etcd broke
the old one): the new watch must not outlive the close. Both used to keep it open for good,
a thread and an etcd stream each (PrefixMirror's re-sync thread, ValueCache's restart timer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from droplet.store.memory import MemoryKV
from droplet.store.mirror import PrefixMirror
from droplet.store.values import ValueStore
from droplet.worker.cache import ValueCache
from tests.unit.helpers import SETTINGS

pytestmark = pytest.mark.timeout(30)


class HeldWatchKV(MemoryKV):
    """Its watch_prefix, once armed, waits until released: the close lands meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.open: set[int] = set()
        self._n = 0

    def watch_prefix(self, prefix: str, on_events: Any, on_error: Any,
                     start_revision: int = 0) -> Callable[[], None]:
        if self.armed:
            self.entered.set()
            assert self.release.wait(10)
        cancel = super().watch_prefix(prefix, on_events, on_error, start_revision)
        self._n += 1
        n = self._n
        self.open.add(n)

        def cancelled() -> None:
            self.open.discard(n)
            cancel()

        return cancelled


def test_a_mirror_closed_during_its_resync_leaves_no_watch_open() -> None:
    kv = HeldWatchKV()
    mirror = PrefixMirror(kv, "/p/", retry_s=0.01).start()
    assert len(kv.open) == 1
    kv.armed = True
    mirror._on_error(RuntimeError("etcd broke the watch"))  # as a failing watch reports it
    assert kv.entered.wait(5), "the re-sync never started"
    mirror.close()
    kv.release.set()
    time.sleep(0.2)
    assert not kv.open, "the re-sync's watch outlived close()"


def test_a_value_cache_closed_during_its_restart_leaves_no_watch_open() -> None:
    kv = HeldWatchKV()
    cache = ValueCache(ValueStore(kv, SETTINGS), 100, 1 << 20)
    cache.start()
    first = set(kv.open)
    kv.armed = True
    cache._on_error(RuntimeError("etcd broke the watch"))  # restarts after 0.5 s
    assert kv.entered.wait(5), "the restart never came"
    cache.close()
    kv.release.set()
    time.sleep(0.2)
    assert not (kv.open - first), "the restart's watch outlived close()"
    assert not cache.healthy
