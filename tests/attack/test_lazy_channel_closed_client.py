"""A lean etcd client used after close() (a thread of a closing process still at work, or a
thread that picked the client a token renewal replaced: EtcdClient._reconnect closes its lean
connections): the next request made a new lean KV stub, whose pooled connection nobody would
close: a ResourceWarning (an error where warnings are errors) when it was collected. The
stub of a client closed or replaced now keeps no connection."""

from __future__ import annotations

import contextlib
import gc
import warnings

import pytest

from droplet.settings import Settings
from droplet.store.etcd import EtcdKV

pytestmark = [pytest.mark.timeout(20)]


def _pooled(kv: EtcdKV) -> int:
    stub = kv._etcd.client._stubs.get("kvstub")
    return 0 if stub is None else len(stub._idle)


def test_a_request_after_close_leaves_no_connection_open(settings: Settings) -> None:
    kv = EtcdKV(settings.with_(etcd_transport="lean"))
    key = f"/{settings.namespace}/lazy-closed"
    kv.put(key, b"1")
    kv.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(Exception):  # refusing is fine too; keeping a socket is not
            kv.get(key)
        assert _pooled(kv) == 0, "a closed client pooled a connection"
        del kv
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_request_on_a_client_replaced_at_a_token_renewal_keeps_no_connection(
        settings: Settings) -> None:
    kv = EtcdKV(settings.with_(etcd_transport="lean"))
    try:
        old = kv._etcd.client
        kv.get("/anything")
        old.close_kv()  # what _reconnect does to the client it replaces
        kv.get("/anything")  # a thread that picked the old client before the swap
        assert _pooled(kv) == 0, "a replaced client pooled a connection"
    finally:
        kv.close()
