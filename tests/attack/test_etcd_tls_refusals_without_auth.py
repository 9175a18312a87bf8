"""Attack: TLS refusals from an etcd without authentication, and a certificate for another
host.

The existing refusal checks (tests/tls_checks.py) always set a user, so the first request is
the library's Authenticate and its gRPC error arrives raw. Without a user, the first request
is a plain get, which the library turns into `ConnectionFailedError("")`: the gRPC detail
("certificate verify failed", "Hostname Verification Check failed") was lost, nothing was
recognised, and a CA that did not sign etcd's certificate was retried for store_retry_s and
ended as "etcd get failed: etcd connection failed". And gRPC words a certificate issued for
another host as "Hostname Verification Check failed", which no marker knew, with or without a
user. README "Security": what no retry fixes is refused at once with a TlsError naming the
setting; the host name of the endpoint is verified. Also: a TLS client at a plaintext etcd
(see the last test).
Run: .venv/bin/python -m pytest -q tests/attack/test_etcd_tls_refusals_without_auth.py
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from droplet.cli.etcd_local import EtcdTls, LocalEtcd, find_etcd_binary, free_port
from droplet.errors import StoreTlsError
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from tests.tls_certs import TestCertificates, make_certificates

pytestmark = [
    pytest.mark.e2e, pytest.mark.timeout(90),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]

# store_retry_s of the refusals: one that takes half of it (30 s) was retried as if etcd were
# away; refused at once it takes well under a second, a few on a crowded host.
_RETRY_S = 60.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _tls_etcd(base: Path, certs: TestCertificates, host: str) -> Iterator[LocalEtcd]:
    tls = EtcdTls(certs.server_cert, certs.server_key, certs.ca_file)
    etcd = LocalEtcd(base / "data", f"{host}:{free_port(host)}", tls=tls)
    try:
        if host == "127.0.0.1":
            etcd.start()
        else:  # its /health cannot be verified under this name: wait for its port
            etcd.start(wait=False)
            deadline = time.monotonic() + 20
            while not _accepts(host, etcd.port):
                assert time.monotonic() < deadline, "etcd did not listen within 20 s"
                time.sleep(0.1)
        yield etcd
    finally:
        etcd.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def etcd_no_auth(tmp_path_factory: pytest.TempPathFactory, certs: TestCertificates
                 ) -> Iterator[LocalEtcd]:
    yield from _tls_etcd(tmp_path_factory.mktemp("etcd"), certs, "127.0.0.1")


@pytest.fixture(scope="module")
def etcd_other_host(tmp_path_factory: pytest.TempPathFactory, certs: TestCertificates
                    ) -> Iterator[LocalEtcd]:
    # Its certificate names 127.0.0.1 and localhost: reached as 127.0.0.2 it is another host.
    yield from _tls_etcd(tmp_path_factory.mktemp("etcd2"), certs, "127.0.0.2")


def _refusal(settings: Settings) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(StoreTlsError) as refused:
        kv = EtcdKV(settings.with_(store_retry_s=_RETRY_S))
        try:
            kv.get("/attack/x")
        finally:
            kv.close()
    return str(refused.value), time.monotonic() - started


def test_a_wrong_ca_without_a_user_is_refused_at_once(
    etcd_no_auth: LocalEtcd, certs: TestCertificates,
) -> None:
    good = Settings(etcd_endpoints=(etcd_no_auth.endpoint,), etcd_ca_file=certs.ca_file)
    kv = EtcdKV(good)
    try:
        kv.put("/attack/x", b"1")  # the right CA works
    finally:
        kv.close()
    message, took = _refusal(good.with_(etcd_ca_file=certs.wrong_ca_file))
    assert "not signed by a CA this client trusts" in message, message
    assert "etcd_ca_file" in message
    assert took < _RETRY_S / 2, f"refused after {took:.1f}s (retried as if etcd were away)"


@pytest.mark.parametrize("user", [None, "root"], ids=["no-user", "user"])
def test_a_certificate_for_another_host_is_refused_at_once(
    etcd_other_host: LocalEtcd, certs: TestCertificates, user: str | None,
) -> None:
    settings = Settings(etcd_endpoints=(etcd_other_host.endpoint,), etcd_ca_file=certs.ca_file,
                        etcd_user=user, etcd_password="secret-pw" if user else None)
    message, took = _refusal(settings)
    assert "certificate issued for another host" in message, message
    assert etcd_other_host.endpoint in message
    assert "secret-pw" not in message
    assert took < _RETRY_S / 2, f"refused after {took:.1f}s (retried as if etcd were away)"


@pytest.fixture(scope="module")
def etcd_plaintext(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    etcd = LocalEtcd(tmp_path_factory.mktemp("etcd-plain") / "data").start()
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.mark.parametrize("user", [None, "root"], ids=["no-user", "user"])
def test_a_tls_client_at_a_plaintext_etcd_is_told_so_at_once(
    etcd_plaintext: LocalEtcd, certs: TestCertificates, user: str | None,
) -> None:
    """etcd without TLS closes the connection at the TLS hello; gRPC says "Handshake read
    failed (Socket closed)", as for a member going away: it was retried for store_retry_s."""
    settings = Settings(etcd_endpoints=(etcd_plaintext.endpoint,), etcd_ca_file=certs.ca_file,
                        etcd_user=user, etcd_password="secret-pw" if user else None)
    message, took = _refusal(settings)
    assert "does not answer with TLS" in message and "etcd_ca_file" in message, message
    assert "secret-pw" not in message
    assert took < _RETRY_S / 2, f"refused after {took:.1f}s (retried as if etcd were away)"
