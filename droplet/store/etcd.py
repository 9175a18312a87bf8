"""etcd behind the `KV` interface; etcd3 (python3-etcd3) is imported only in store/etcd*.py.

This module holds the key-value operations themselves (reads, writes, deletes, leases) in
the shape the rest of Droplet asks for them. Reaching a member and surviving its loss is
store/etcd_client.py, transactions with previous values store/etcd_txn.py, and watch
streams store/etcd_watch.py: each fails in its own way, and each is read on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from etcd3 import etcdrpc
from etcd3 import transactions as tx

from droplet.errors import StoreError
from droplet.settings import Settings
from droplet.store.etcd_client import REQUEST_TIMEOUT_S, EtcdClient
from droplet.store.etcd_txn import transaction
from droplet.store.etcd_watch import PrefixWatch
from droplet.store.kv import Compare, Entry, ErrorCallback, Op, WatchCallback

log = logging.getLogger(__name__)


class EtcdLease:
    def __init__(self, kv: EtcdKV, lease: Any) -> None:
        self._kv = kv
        self._lease = lease

    @property
    def id(self) -> int:
        return int(self._lease.id)

    def refresh(self) -> None:
        # At most a third of the ttl per attempt: on a member that hangs, the library's 5 s
        # deadline outlived a short lease (3 s: a live worker was taken for dead) before the
        # keepalive moved to a member that answers.
        timeout = min(REQUEST_TIMEOUT_S, max(float(self._lease.ttl) / 3, 0.5))

        def keepalive(c: Any) -> list[Any]:
            request = etcdrpc.LeaseKeepAliveRequest(ID=self.id)
            return list(c.leasestub.LeaseKeepAlive(
                iter([request]), timeout, credentials=c.call_credentials, metadata=c.metadata))

        responses = self._kv.call("lease refresh", keepalive)
        if not responses or responses[0].TTL <= 0:
            raise StoreError(f"lease {self.id} expired")

    def revoke(self) -> None:
        self._kv.call("lease revoke", lambda c: c.revoke_lease(self.id))


class EtcdKV:
    def __init__(self, settings: Settings) -> None:
        self._etcd = EtcdClient(settings)

    def call(self, action: str, fn: Callable[[Any], Any]) -> Any:
        """Runs fn(client) with retries and fail-over (EtcdClient.call)."""
        return self._etcd.call(action, fn)

    def fail_over(self) -> None:
        """Sends the next request to another member (EtcdClient.fail_over)."""
        self._etcd.fail_over()

    @property
    def endpoint_in_use(self) -> str:
        """host:port of the member requests go to now."""
        return self._etcd.endpoint_in_use

    def get(self, key: str) -> bytes | None:
        value, _ = self.call("get", lambda c: c.get(key))
        return value  # type: ignore[no-any-return]

    def get_entries(self, keys: Sequence[str], revision: int = 0) -> dict[str, Entry]:
        if revision:
            found: dict[str, Entry] = {}
            for key in keys:
                resp = self.call("get", partial(_get_at, key=key, revision=revision))
                for kv in resp.kvs:
                    found[key] = _entry(kv)
            return found
        if len(keys) == 1:
            resp = self.call("get", lambda c: c.get_response(keys[0]))
            return {keys[0]: _entry(resp.kvs[0])} if resp.kvs else {}
        _ok, responses = self.call(
            "get",
            lambda c: c.transaction(compare=[], success=[tx.Get(k) for k in keys], failure=[]),
        )
        out: dict[str, Entry] = {}
        for key, rows in zip(keys, responses, strict=True):
            for value, meta in rows:
                out[key] = Entry(value, meta.mod_revision, meta.create_revision, meta.version)
        return out

    def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        resp = self.call("get prefix", lambda c: c.get_prefix_response(prefix))
        entries = {kv.key.decode(): kv.value for kv in resp.kvs}
        return entries, int(resp.header.revision)

    def count_prefix(self, prefix: str) -> int:
        resp = self.call("count", lambda c: c.get_prefix_response(prefix, count_only=True))
        return int(resp.count)

    def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        resp = self.call("put", lambda c: c.put(key, value, lease=lease))
        return int(resp.header.revision)

    def delete(self, key: str, prefix: bool = False) -> int:
        if prefix:
            resp = self.call("delete", lambda c: c.delete_prefix(key))
        else:
            resp = self.call("delete", lambda c: c.delete(key, return_response=True))
        return int(resp.deleted)

    def txn(
        self, compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op] = ()
    ) -> tuple[bool, int]:
        ok, revision, _ = self._txn(compares, success, failure, previous=False)
        return ok, revision

    def txn_previous(
        self, compares: Iterable[Compare], success: Iterable[Op],
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[bool, int, dict[str, bytes]]:
        return self.call("transaction",  # type: ignore[no-any-return]
                         transaction(compares, success, (), previous=True,
                                     meanwhile=meanwhile))

    def _txn(
        self, compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op],
        previous: bool,
    ) -> tuple[bool, int, dict[str, bytes]]:
        run = transaction(compares, success, failure, previous)
        return self.call("transaction", run)  # type: ignore[no-any-return]

    def revision(self) -> int:
        resp = self.call("revision", lambda c: c.get_response("\0", count_only=True))
        return int(resp.header.revision)

    def grant_lease(self, ttl_s: int) -> EtcdLease:
        return EtcdLease(self, self.call("lease grant", lambda c: c.lease(ttl_s)))

    def watch_prefix(
        self,
        prefix: str,
        on_events: WatchCallback,
        on_error: ErrorCallback,
        start_revision: int = 0,
    ) -> Callable[[], None]:
        watch = PrefixWatch(self._etcd.client, self._etcd.endpoints, prefix,
                            start_revision, on_events, on_error)
        watch.start()
        return watch.cancel

    def close(self) -> None:
        try:
            self._etcd.close()
        except Exception:
            log.debug("etcd client close failed", exc_info=True)


def _entry(kv: Any) -> Entry:
    return Entry(kv.value, int(kv.mod_revision), int(kv.create_revision), int(kv.version))


def _get_at(client: Any, key: str, revision: int) -> Any:
    return client.get_response(key, revision=revision)
