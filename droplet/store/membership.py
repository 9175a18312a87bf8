"""Fleet membership: a process's status record under an etcd lease it keeps alive.

A process that dies (kill -9, lost VM) stops refreshing, and etcd deletes its record when the
lease runs out, which every scheduler sees through its watch. When etcd itself was away long
enough for the lease to lapse, the record is re-created under a fresh lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from droplet.errors import StoreRequestTooLargeError
from droplet.store.kv import KV, Lease

log = logging.getLogger(__name__)


class Membership:
    def __init__(
        self,
        kv: KV,
        key: str,
        ttl_s: int,
        record: Callable[[], bytes],
        interval_s: float | None = None,
        on_register: Callable[[], None] | None = None,
    ) -> None:
        self._kv = kv
        self._key = key
        self._ttl_s = max(2, ttl_s)
        self._record = record
        # Refresh well inside the lease, however slowly the status is meant to change.
        self._interval_s = min(interval_s or self._ttl_s, self._ttl_s / 3)
        self._on_register = on_register  # after a re-registration (the lease had lapsed)
        self._lease: Lease | None = None
        self._lease_id: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # publish_soon(), or leave()
        self._thread: threading.Thread | None = None

    @property
    def lease_id(self) -> int | None:
        return self._lease_id

    def taken(self) -> bool:
        """Whether a record lives under this key already: another process under the same id,
        or one that died less than a lease ago (its record is not gone yet)."""
        return self._kv.get(self._key) is not None

    def join(self) -> None:
        """Registers now (raises StoreError when etcd is unreachable), then keeps alive."""
        self._register()
        self._thread = threading.Thread(target=self._keepalive, daemon=True, name="membership")
        self._thread.start()

    def publish(self) -> None:
        """Writes the current record (status changes between keepalives). The lease id is
        read before the record: a leave() while the record is read must not turn the write
        into one with no lease (a record that never goes away); under the revoked lease it is
        refused instead (tests/attack/test_membership_record_outlives_leave.py)."""
        lease_id = self._lease_id
        if lease_id is not None:
            self._put(lease_id)

    def publish_soon(self) -> None:
        """Has the keepalive thread write the current record now rather than at its next
        round: safe from any thread, a watch callback's included (it never waits on etcd)."""
        self._wake.set()

    def leave(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._lease is not None:
            try:
                self._kv.delete(self._key)
                self._lease.revoke()
            except Exception as exc:
                log.debug("leaving the fleet cleanly failed: %s", exc)
            self._lease = None
            self._lease_id = None

    def _register(self) -> None:
        self._lease = self._kv.grant_lease(self._ttl_s)
        self._lease_id = self._lease.id
        self._put(self._lease_id)

    def _put(self, lease_id: int) -> None:
        """Writes the record; one etcd refuses as too large leaves the last one standing. The
        keepalive took that refusal for a lost lease: it stopped refreshing the lease (the
        record expired, and the fleet counted a process that ran on as dead) and granted a
        new one each round, refused again."""
        try:
            self._kv.put(self._key, self._record(), lease_id)
        except StoreRequestTooLargeError as exc:
            log.warning("the record of %s is more than etcd takes (%s): the last one stands",
                        self._key, exc)

    def _keepalive(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()  # before the record is read: a later change wakes us again
            if self._stop.is_set():
                return
            try:
                if self._lease_id is None:
                    self._register()
                    log.info("re-registered %s under a new lease", self._key)
                    if self._on_register is not None:
                        self._on_register()
                elif (lease := self._lease) is not None:
                    lease.refresh()
                    self._put(lease.id)  # (publish says why the lease id is read first)
            except Exception as exc:
                log.warning("keepalive of %s failed: %s", self._key, exc)
                self._lease_id = None
