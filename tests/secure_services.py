"""RabbitMQ and etcd with TLS (and etcd with a password) for the TLS tests, on this machine.

Certificates come from tests/tls_certs.py; the RabbitMQ node is a PrivateRabbit listening with
TLS only and requiring a client certificate; etcd is a LocalEtcd serving TLS with
authentication enabled (user root).
"""

from __future__ import annotations

from pathlib import Path

import grpc
from etcd3 import etcdrpc

from droplet.cli.etcd_local import EtcdTls, LocalEtcd, free_port
from tests.private_rabbit import PrivateRabbit, RabbitTls
from tests.tls_certs import TestCertificates

ETCD_USER = "root"
ETCD_PASSWORD = "s3cret-for-tests"


def enable_etcd_auth(endpoint: str, ca_file: str, password: str = ETCD_PASSWORD) -> None:
    """Adds user root with password and turns etcd's authentication on."""
    credentials = grpc.ssl_channel_credentials(Path(ca_file).read_bytes())
    with grpc.secure_channel(endpoint, credentials) as channel:
        auth = etcdrpc.AuthStub(channel)
        auth.UserAdd(etcdrpc.AuthUserAddRequest(name=ETCD_USER, password=password),
                     timeout=10)
        auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user=ETCD_USER, role="root"),
                           timeout=10)
        auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=10)


def start_tls_etcd(base: Path, certs: TestCertificates) -> LocalEtcd:
    """etcd on a free loopback port, serving TLS with certs' server certificate, auth on."""
    tls = EtcdTls(certs.server_cert, certs.server_key, certs.ca_file)
    etcd = LocalEtcd(base / "data", f"127.0.0.1:{free_port()}", tls=tls).start()
    try:
        enable_etcd_auth(etcd.endpoint, certs.ca_file)
    except BaseException:
        etcd.stop()
        raise
    return etcd


def tls_rabbit(base: Path, certs: TestCertificates, *, expired: bool = False,
               label: str = "tls") -> PrivateRabbit:
    """A TLS-only RabbitMQ node (not started) requiring a client certificate signed by the
    test CA; with expired=True it presents the expired server certificate."""
    cert, key = ((certs.expired_server_cert, certs.expired_server_key) if expired
                 else (certs.server_cert, certs.server_key))
    return PrivateRabbit(base, label=label, tls=RabbitTls(certs.ca_file, cert, key))
