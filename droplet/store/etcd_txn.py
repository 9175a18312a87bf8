"""etcd transactions from the store's own Compare and Op values (store/kv.py).

Apart from the plain reads and writes (store/etcd.py) because a transaction goes past the
library: it is sent on the client's gRPC stub directly, so that the previous values of what
it overwrites or deletes come back with it (`txn_previous`, which the commits of a message
cycle use), which the library's own `transaction` drops.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import etcd3
from etcd3 import transactions as tx
from etcd3 import utils as etcd_utils

from droplet.store.kv import (
    Compare,
    Delete,
    ModRevisionBelow,
    ModRevisionIs,
    Op,
    Put,
    ValueIs,
    VersionIs,
)


def transaction(
    compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op], previous: bool
) -> Any:
    """A function of the etcd3 client running the transaction: (succeeded, revision, the
    previous values of the keys the success ops wrote or deleted when `previous`)."""
    cmp = [_compare(c) for c in compares]
    ok_ops = [_op(o, previous) for o in success]
    fail_ops = [_op(o, False) for o in failure]

    def run(c: Any) -> tuple[bool, int, dict[str, bytes]]:
        request = etcd3.etcdrpc.TxnRequest(
            compare=[x.build_message() for x in cmp],
            success=c._ops_to_requests(ok_ops),
            failure=c._ops_to_requests(fail_ops),
        )
        resp = c.kvstub.Txn(
            request, c.timeout, credentials=c.call_credentials, metadata=c.metadata
        )
        old: dict[str, bytes] = {}
        if previous and resp.succeeded:
            for item in resp.responses:
                kind = item.WhichOneof("response")
                if kind == "response_put" and item.response_put.HasField("prev_kv"):
                    kv = item.response_put.prev_kv
                    old[kv.key.decode()] = kv.value
                elif kind == "response_delete_range":
                    for kv in item.response_delete_range.prev_kvs:
                        old[kv.key.decode()] = kv.value
        return bool(resp.succeeded), int(resp.header.revision), old

    return run


def _compare(c: Compare) -> Any:
    if isinstance(c, VersionIs):
        return tx.Version(c.key) == c.version
    if isinstance(c, ValueIs):
        return tx.Value(c.key) == c.value
    if isinstance(c, ModRevisionBelow):
        return tx.Mod(c.key) < c.revision
    if isinstance(c, ModRevisionIs):
        return tx.Mod(c.key) == c.revision
    raise TypeError(f"unknown compare {c!r}")


def _op(o: Op, previous: bool) -> Any:
    if isinstance(o, Put):
        return tx.Put(o.key, o.value, lease=o.lease, prev_kv=previous)
    if isinstance(o, Delete):
        end = etcd_utils.prefix_range_end(etcd_utils.to_bytes(o.key)) if o.prefix else None
        return tx.Delete(o.key, range_end=end, prev_kv=previous)
    raise TypeError(f"unknown op {o!r}")
