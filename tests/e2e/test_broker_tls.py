"""RabbitMQ over TLS for real: a node of its own listening with TLS only and requiring client
certificates, etcd with TLS and a password, certificates made by the test (tests/tls_certs.py).

The fleet (a scheduler and workers as `droplet` processes, configured through the environment)
and a client (configured from a TOML file) connect with amqps://, verify the server and
present their certificate; calls and a DAG run. A wrong CA, an expired server certificate, a
missing client certificate and a plaintext client are each refused at once with a
`BrokerTlsError` that says what to set (a wrong password with a `BrokerCredentialsError`).
The checks themselves are in tests/tls_checks.py (test_broker_tls_containers.py runs them
against containers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from droplet.cli.cluster import LocalCluster
from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import Settings
from tests.conftest import Services
from tests.private_rabbit import PrivateRabbit, needs_rabbitmq_server
from tests.secure_services import start_tls_etcd, tls_rabbit
from tests.tls_certs import TestCertificates, make_certificates
from tests.tls_checks import (
    check_broker_refusals,
    check_expired,
    over_tls,
    refused,
    run_calls_and_a_dag,
)

pytestmark = [
    pytest.mark.e2e,
    needs_rabbitmq_server,
]


@dataclass
class SecureServices:
    certs: TestCertificates
    rabbit: PrivateRabbit
    etcd: LocalEtcd
    base: Path

    def settings(self, services: Services) -> Settings:
        return over_tls(services.settings(), self.rabbit.url, self.etcd.endpoint, self.certs)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServices]:
    base = tmp_path_factory.mktemp("tls")
    certs = make_certificates(base / "certs")
    etcd = start_tls_etcd(base / "etcd", certs)
    rabbit = tls_rabbit(base / "rabbit", certs)
    try:
        rabbit.start()
        yield SecureServices(certs, rabbit, etcd, base)
    finally:
        rabbit.stop()
        etcd.stop()


def _connections(rabbit: PrivateRabbit) -> list[tuple[str, str]]:
    listing = rabbit.ctl("-q", "list_connections", "--no-table-headers", "ssl",
                         "peer_cert_subject").stdout
    return [(ssl, subject) for ssl, _, subject in
            (line.partition("\t") for line in listing.splitlines() if "\t" in line)]


def test_a_fleet_over_tls_runs_calls_and_a_dag(
    services: Services, secure: SecureServices, tmp_path: Path, unique: str
) -> None:
    run_calls_and_a_dag(secure.settings(services), tmp_path, unique,
                        lambda: _connections(secure.rabbit))


@pytest.mark.timeout(120)
def test_tls_refusals_are_clear_and_immediate(services: Services, secure: SecureServices) -> None:
    good = secure.settings(services)
    check_broker_refusals(good, secure.certs, secure.base)
    # The reverse: a TLS client at the (plaintext) port of the session's broker.
    if services.broker_url.startswith("amqp://"):
        tls_url = "amqps://" + services.broker_url[len("amqp://"):]
        not_tls = refused(good.with_(broker_url=tls_url), "TLS client at a plaintext port")
        assert "does not answer with TLS" in str(not_tls)


@pytest.mark.timeout(180)
def test_a_server_with_an_expired_certificate_is_refused(
    services: Services, secure: SecureServices, tmp_path: Path
) -> None:
    rabbit = tls_rabbit(tmp_path / "rabbit", secure.certs, expired=True, label="tlsexpired")
    try:
        rabbit.start()
        check_expired(secure.settings(services).with_(broker_url=rabbit.url))
    finally:
        rabbit.stop()


@pytest.mark.timeout(120)
def test_a_worker_with_a_wrong_ca_says_why_in_its_log(
    services: Services, secure: SecureServices, tmp_path: Path
) -> None:
    """A worker keeps retrying (the operator may fix the server's side) and logs the cause."""
    settings = secure.settings(services).with_(broker_ca_file=secure.certs.wrong_ca_file)
    cluster = LocalCluster(settings, tmp_path).start(workers=1, schedulers=0)
    log = tmp_path / "worker-0.log"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "set broker_ca_file" not in log.read_text():
            assert cluster.workers[0].poll() is None, log.read_text()
            time.sleep(0.2)
    finally:
        cluster.stop()
    assert "not signed by a CA this client trusts" in log.read_text()
