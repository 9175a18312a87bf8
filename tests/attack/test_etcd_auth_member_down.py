"""Attack (real 3-member etcd clusters of local processes, authentication on): one member is
down while processes start.

etcd3's client authenticates in its constructor, on an endpoint it picks at random, with no
fail-over: with one member of three down, about one process start in three failed at once
with "etcd connect failed: UNAVAILABLE" (the same on every token renewal), although two
members serve. And over plaintext (no etcd_ca_file), every request failed with
"UNAUTHENTICATED: Established channel does not have a sufficient security level to transfer
call credential": gRPC refuses call credentials on a channel without TLS, so etcd_user and
etcd_password never worked without TLS. Now authentication moves to another member like
every other request, and over plaintext the token goes as request metadata (as etcdctl sends
it).
README "Configuration": "etcd endpoints (every member of a cluster: requests and watches move
to another when one dies)", "etcd user and password (etcd's authentication)".
Run: .venv/bin/python -m pytest -q tests/attack/test_etcd_auth_member_down.py
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from etcd3 import etcdrpc

from droplet.cli.etcd_local import EtcdTls, LocalEtcd, find_etcd_binary
from droplet.errors import StoreCredentialsError
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from tests.tls_certs import make_certificates

pytestmark = [
    pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]

PASSWORD = "attack-pw"


def _enable_auth(channel: grpc.Channel) -> None:
    auth = etcdrpc.AuthStub(channel)
    auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=PASSWORD), timeout=10)
    auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
    auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=10)


@pytest.fixture(scope="module", params=["plaintext", "tls"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[list[LocalEtcd], Settings]]:
    base: Path = tmp_path_factory.mktemp(f"etcd-{request.param}")
    members = LocalEtcd.members(base / "members", 3)
    settings = Settings(etcd_endpoints=tuple(m.endpoint for m in members),
                        etcd_user="root", etcd_password=PASSWORD, store_retry_s=10)
    ca = None
    if request.param == "tls":
        certs = make_certificates(base / "certs")
        ca = certs.ca_file
        settings = settings.with_(etcd_ca_file=ca)
        for member in members:
            member.tls = EtcdTls(certs.server_cert, certs.server_key, certs.ca_file)
    try:
        for member in members:
            member.start(wait=False)
        for member in members:
            member.wait_ready(60)
        if ca is None:
            with grpc.insecure_channel(members[1].endpoint) as channel:
                _enable_auth(channel)
        else:
            credentials = grpc.ssl_channel_credentials(Path(ca).read_bytes())
            with grpc.secure_channel(members[1].endpoint, credentials) as channel:
                _enable_auth(channel)
        yield members, settings
    finally:
        for member in members:
            member.stop()


def test_processes_start_and_work_with_one_member_down(
    cluster: tuple[list[LocalEtcd], Settings],
) -> None:
    members, settings = cluster
    kv = EtcdKV(settings)
    try:
        kv.put("/attack/auth", b"up")
    finally:
        kv.close()
    members[0].kill()
    try:
        for attempt in range(8):  # the library picks its first member at random
            kv = EtcdKV(settings)
            try:
                assert kv.get("/attack/auth") == b"up", attempt
                kv.put("/attack/auth", b"up")
            finally:
                kv.close()
        with pytest.raises(StoreCredentialsError):  # a wrong password is still refused
            EtcdKV(settings.with_(etcd_password="wrong")).get("/attack/auth")
    finally:
        members[0].start()
