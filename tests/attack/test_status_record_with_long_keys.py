"""Attack: a worker that reads values stored under long keys (a client may name a key with
thousands of characters; nothing bounds a key's length).

A worker's status record lists the last 256 keys it cached, for locality. With keys of 8 KB
that is 2 MB, over the 1.5 MiB etcd takes in one request: the record's every write was
refused, and the membership keepalive took each refusal for a lost lease: it stopped
refreshing the lease it held (its record expired: the fleet counted the worker dead while it
served on, and reaped its queue) and granted a new one each round, refused again.
"""

from __future__ import annotations

import time

from droplet.errors import StoreRequestTooLargeError
from droplet.proto import pb
from droplet.store.membership import Membership
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from droplet.worker.cache import REPORTED_KEYS, ValueCache
from tests.unit.helpers import SETTINGS

ETCD_REQUEST_BYTES = 1536 * 1024  # etcd's default --max-request-bytes


def test_a_status_record_names_long_keys_within_what_etcd_takes() -> None:
    cache = ValueCache(ValueStore(MemoryKV(), SETTINGS), 1000, 1 << 30)
    cache.start()
    try:
        for i in range(REPORTED_KEYS):
            cache.store(f"{i:04d}" + "k" * 8192, pb.Value(body=b"v"), revision=1)
        record = pb.WorkerStatus(id="w", cached_keys=cache.keys())
        assert record.ByteSize() < ETCD_REQUEST_BYTES // 4
        assert cache.keys()[-1].startswith(f"{REPORTED_KEYS - 1:04d}"), "the latest first"
        cache.store("short", pb.Value(body=b"v"), revision=1)
        assert cache.keys()[-1] == "short"
    finally:
        cache.close()


class _RefusesLargeRecords(MemoryKV):
    """etcd's answer to a record over its request limit."""

    def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        if len(value) > ETCD_REQUEST_BYTES:
            raise StoreRequestTooLargeError("etcd refused the put as too large")
        return super().put(key, value, lease)


def test_a_record_etcd_refuses_as_too_large_does_not_give_up_the_lease() -> None:
    """Whatever makes a record too large, the lease it lives under is still refreshed: the
    keepalive took the refusal for a lost lease, and the fleet counted the worker dead."""
    kv = _RefusesLargeRecords()
    size = [10]
    membership = Membership(kv, "workers/w", 3, lambda: b"x" * size[0], interval_s=0.05)
    membership.join()
    try:
        lease = membership.lease_id
        size[0] = 2 * ETCD_REQUEST_BYTES
        time.sleep(0.5)
        assert membership.lease_id == lease, "a new lease after a refused record"
        assert kv.get("workers/w") == b"x" * 10, "the last record stands"
    finally:
        membership.leave()
