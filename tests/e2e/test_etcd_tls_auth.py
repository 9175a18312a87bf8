"""etcd over TLS with user/password authentication: a fleet configured for it works; clients
without the CA or with a wrong password get a clear StoreError."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from etcd3 import etcdrpc

import droplet
from droplet.cli.etcd_local import EtcdTls, LocalEtcd, free_port
from tests.conftest import Services, purge_namespace, start_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for test certs"),
]

PASSWORD = "s3cret-for-tests"


def _certificates(directory: Path) -> EtcdTls:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory,
                       timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.crt", "-subj", "/CN=droplet-test-ca", "-days", "2")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return EtcdTls(str(directory / "server.crt"), str(directory / "server.key"),
                   str(directory / "ca.crt"))


def _enable_auth(endpoint: str, ca_file: str) -> None:
    credentials = grpc.ssl_channel_credentials(Path(ca_file).read_bytes())
    with grpc.secure_channel(endpoint, credentials) as channel:
        auth = etcdrpc.AuthStub(channel)
        auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=PASSWORD), timeout=10)
        auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"),
                           timeout=10)
        auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=10)


@pytest.fixture
def secure_etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    tls = _certificates(tmp_path)
    etcd = LocalEtcd(tmp_path / "etcd", f"127.0.0.1:{free_port()}", tls=tls).start()
    try:
        _enable_auth(etcd.endpoint, tls.ca_file)
        yield etcd
    finally:
        etcd.stop()


def test_a_fleet_on_tls_etcd_with_credentials(
    services: Services, secure_etcd: LocalEtcd, tmp_path: Path, unique: str
) -> None:
    assert secure_etcd.tls is not None
    settings = services.settings().with_(
        etcd_endpoints=(secure_etcd.endpoint,), etcd_ca_file=secure_etcd.tls.ca_file,
        etcd_user="root", etcd_password=PASSWORD,
    )
    cluster = start_cluster(settings, tmp_path, workers=2)
    try:
        with droplet.connect(settings=settings) as c:
            c.register(lambda lib, x: x + 1, unique)
            assert c.call(unique, 41).get(timeout=20) == 42
            c.put_object(unique, "kept")
            assert c.get_object(unique) == "kept"
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())

    wrong: Any = settings.with_(etcd_password="wrong", store_retry_s=1.0)
    with pytest.raises(droplet.StoreError, match="etcd"):
        droplet.connect(settings=wrong)
    plaintext: Any = settings.with_(etcd_ca_file=None, etcd_user=None, etcd_password=None,
                                    store_retry_s=1.0)
    with pytest.raises(droplet.StoreError, match="etcd"), droplet.connect(settings=plaintext) as c:
        c.list()
