"""Shared etcd leases that make bookkeeping keys expire on their own.

Results, join state and redelivery counts must not outlive their use, and must not cost a
lease each: one lease per time-to-live is shared by every key written within a tenth of that
time, so a key lives between 0.9 and 1.0 times its ttl. A lease that etcd no longer knows (it
expired while this process was cut off) is replaced on the next request.
"""

from __future__ import annotations

import threading
import time

from droplet.store.kv import KV


class LeasePool:
    def __init__(self, kv: KV) -> None:
        self._kv = kv
        self._lock = threading.Lock()
        self._leases: dict[int, tuple[int, float]] = {}  # ttl -> (lease id, granted at)

    def lease(self, ttl_s: float) -> int | None:
        """A lease id living at least 0.9 x ttl_s from now; None for ttl_s <= 0 (no expiry)."""
        ttl = int(ttl_s)
        if ttl <= 0:
            return None
        with self._lock:
            now = time.monotonic()
            held = self._leases.get(ttl)
            if held is not None and now - held[1] <= ttl / 10:
                return held[0]
            lease_id = self._kv.grant_lease(ttl).id
            self._leases[ttl] = (lease_id, now)
            return lease_id

    def forget(self) -> None:
        """Drops every held lease (etcd said one is unknown): the next request grants anew."""
        with self._lock:
            self._leases.clear()
