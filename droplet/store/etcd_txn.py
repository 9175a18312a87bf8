"""etcd transactions from the store's own Compare and Op values (store/kv.py).

Apart from the plain reads and writes (store/etcd.py) because a transaction goes past the
library: it is sent on the client's gRPC stub directly, so that the previous values of what
it overwrites or deletes come back with it (`txn_previous`, which the commits of a message
cycle use), which the library's own `transaction` drops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from etcd3 import etcdrpc
from etcd3 import utils as etcd_utils

from droplet.store.etcd_lean import LeanKV
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

# The request is built straight from the gRPC messages: the library's transaction objects
# cost some twenty Python calls per durable call (a compare object, its operator, a message
# builder, an op object and its request builder each), for the same bytes on the wire.
_C = etcdrpc.Compare


def transaction(
    compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op], previous: bool,
    meanwhile: Callable[[], None] | None = None,
) -> Any:
    """A function of the etcd3 client running the transaction: (succeeded, revision, the
    previous values of the keys the success ops wrote or deleted when `previous`). On the
    lean path `meanwhile` runs once the request is sent (KV.txn_previous); on grpcio not."""
    request = etcdrpc.TxnRequest(
        compare=list(map(_compare, compares)),
        success=[_op(o, previous) for o in success],
        failure=[_op(o, False) for o in failure] if failure else (),
    )

    def run(c: Any) -> tuple[bool, int, dict[str, bytes]]:
        stub = c.kvstub
        if meanwhile is not None and isinstance(stub, LeanKV):
            resp = stub.Txn(request, c.timeout, credentials=c.call_credentials,
                            metadata=c.metadata, meanwhile=meanwhile)
        else:
            resp = stub.Txn(request, c.timeout, credentials=c.call_credentials,
                            metadata=c.metadata)
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
        return _C(key=c.key.encode(), result=_C.EQUAL, target=_C.VERSION, version=c.version)
    if isinstance(c, ValueIs):
        return _C(key=c.key.encode(), result=_C.EQUAL, target=_C.VALUE, value=_bytes(c.value))
    if isinstance(c, ModRevisionBelow):
        return _C(key=c.key.encode(), result=_C.LESS, target=_C.MOD, mod_revision=c.revision)
    if isinstance(c, ModRevisionIs):
        return _C(key=c.key.encode(), result=_C.EQUAL, target=_C.MOD, mod_revision=c.revision)
    raise TypeError(f"unknown compare {c!r}")


def _op(o: Op, previous: bool) -> Any:
    if isinstance(o, Put):
        return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(
            key=o.key.encode(), value=o.value, lease=o.lease or 0, prev_kv=previous))
    if isinstance(o, Delete):
        key = o.key.encode()
        end = etcd_utils.prefix_range_end(key) if o.prefix else b""
        return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(
            key=key, range_end=end, prev_kv=previous))
    raise TypeError(f"unknown op {o!r}")


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value

