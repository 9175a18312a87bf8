"""etcd over TLS with user/password authentication: a fleet configured for it works; a client
with a wrong password, no user, a CA that did not sign etcd's certificate or no TLS at all
gets a clear error at once (not after store_retry_s of retries)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import child_env
from droplet.cli.etcd_local import LocalEtcd
from tests.conftest import Services, purge_namespace, start_cluster
from tests.secure_services import ETCD_PASSWORD, ETCD_USER, start_tls_etcd
from tests.tls_certs import TestCertificates, make_certificates
from tests.tls_checks import LONG_RETRY_S, check_etcd_refusals

pytestmark = pytest.mark.e2e

@pytest.fixture
def certs(tmp_path: Path) -> TestCertificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def secure_etcd(tmp_path: Path, certs: TestCertificates) -> Iterator[LocalEtcd]:
    etcd = start_tls_etcd(tmp_path / "etcd", certs)
    try:
        yield etcd
    finally:
        etcd.stop()


def test_a_fleet_on_tls_etcd_with_credentials(
    services: Services, secure_etcd: LocalEtcd, certs: TestCertificates, tmp_path: Path,
    unique: str,
) -> None:
    settings = services.settings().with_(
        etcd_endpoints=(secure_etcd.endpoint,), etcd_ca_file=certs.ca_file,
        etcd_user=ETCD_USER, etcd_password=ETCD_PASSWORD,
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


@pytest.mark.timeout(120)
def test_etcd_refusals_are_clear_and_immediate(
    services: Services, secure_etcd: LocalEtcd, certs: TestCertificates
) -> None:
    check_etcd_refusals(services.settings(), secure_etcd.endpoint, certs)


@pytest.mark.timeout(120)
def test_a_worker_refused_by_etcd_exits_saying_why(
    services: Services, secure_etcd: LocalEtcd, certs: TestCertificates
) -> None:
    settings = services.settings().with_(
        etcd_endpoints=(secure_etcd.endpoint,), etcd_ca_file=certs.wrong_ca_file,
        etcd_user=ETCD_USER, etcd_password=ETCD_PASSWORD, store_retry_s=LONG_RETRY_S,
    )
    done = subprocess.run([sys.executable, "-m", "droplet.cli.main", "worker"],
                          env=child_env(settings), capture_output=True, text=True, timeout=90)
    assert done.returncode == 1, done.stderr
    assert "not signed by a CA this client trusts" in done.stderr
    assert "set etcd_ca_file (DROPLET_ETCD_CA_FILE)" in done.stderr
