"""Lazy gRPC channels (store/etcd_lean.py LazyChannel) with etcd authentication: the lean
client makes its channels only when something uses gRPC, so that an idle process has no
grpcio threads waking it, but authentication is such a use: the channel made for the
Authenticate call stayed made for the life of the process (and one more at each token
renewal), and an idle worker of an etcd with users woke as often as before the change. The
channel is now let go once the token is in hand (made again if gRPC is needed again)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from etcd3 import etcdrpc

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV

pytestmark = [
    pytest.mark.e2e, pytest.mark.timeout(30),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]

PASSWORD = "lazy-pw"


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base: Path = tmp_path_factory.mktemp("etcd-auth")
    etcd = LocalEtcd(base / "data").start()
    try:
        with grpc.insecure_channel(etcd.endpoint) as channel:
            auth = etcdrpc.AuthStub(channel)
            auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=PASSWORD), timeout=10)
            auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"),
                               timeout=10)
            auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=10)
        yield Settings(etcd_endpoints=(etcd.endpoint,), etcd_user="root",
                       etcd_password=PASSWORD, etcd_transport="lean", store_retry_s=5)
    finally:
        etcd.stop()


def _made(kv: EtcdKV) -> list[str]:
    return [e.netloc for e in kv._etcd.client.endpoints.values() if e.channel.made()]


def test_an_authenticated_lean_client_keeps_no_grpc_channel(auth_etcd: Settings) -> None:
    kv = EtcdKV(auth_etcd)
    try:
        kv.put("/lazy/k", b"v")
        assert kv.get("/lazy/k") == b"v"
        assert _made(kv) == [], "the channel made to authenticate is still open"
    finally:
        kv.close()


def test_a_token_renewal_keeps_no_grpc_channel_either(auth_etcd: Settings) -> None:
    kv = EtcdKV(auth_etcd)
    try:
        old = kv._etcd.client
        kv._etcd._reconnect(old)  # what an expired token leads to
        assert kv._etcd.client is not old
        kv.put("/lazy/k2", b"w")
        assert kv.get("/lazy/k2") == b"w"
        assert _made(kv) == []
        # gRPC still works when something needs it (made again, on demand)
        assert kv._etcd.client.status().version
    finally:
        kv.close()
