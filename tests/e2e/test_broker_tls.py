"""RabbitMQ over TLS for real: a node of its own listening with TLS only and requiring client
certificates, etcd with TLS and a password, certificates made by the test (tests/tls_certs.py).

The fleet (a scheduler and workers as `droplet` processes, configured through the environment)
and a client (configured from a TOML file) connect with amqps://, verify the server and
present their certificate; calls and a DAG run. A wrong CA, an expired server certificate, a
missing client certificate and a plaintext client are each refused at once with a
`BrokerTlsError` that says what to set (a wrong password with a `BrokerCredentialsError`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.cluster import LocalCluster
from droplet.cli.etcd_local import LocalEtcd
from droplet.errors import BrokerCredentialsError, BrokerTlsError
from droplet.settings import Settings
from tests.conftest import Services, start_cluster
from tests.private_rabbit import PrivateRabbit
from tests.secure_services import ETCD_PASSWORD, ETCD_USER, start_tls_etcd, tls_rabbit
from tests.tls_certs import TestCertificates, make_certificates

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("rabbitmq-server") is None
                       and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(),
                       reason="needs rabbitmq-server"),
]

CLIENT_SUBJECT = "droplet-test-client"


@dataclass
class SecureServices:
    certs: TestCertificates
    rabbit: PrivateRabbit
    etcd: LocalEtcd
    base: Path

    def settings(self, services: Services, **changes: Any) -> Settings:
        """Everything over TLS: amqps with the test CA and the client certificate, etcd with
        TLS and its password."""
        return services.settings().with_(
            broker_url=self.rabbit.url, broker_ca_file=self.certs.ca_file,
            broker_cert_file=self.certs.client_cert, broker_key_file=self.certs.client_key,
            etcd_endpoints=(self.etcd.endpoint,), etcd_ca_file=self.certs.ca_file,
            etcd_user=ETCD_USER, etcd_password=ETCD_PASSWORD,
        ).with_(**changes)


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


def _toml(settings: Settings, path: Path) -> Path:
    """The TLS part of settings as a configuration file, as an operator would write it."""
    lines = ["[droplet]"]
    for name in ("broker_url", "broker_ca_file", "broker_cert_file", "broker_key_file",
                 "etcd_ca_file", "etcd_user", "etcd_password", "namespace"):
        lines.append(f'{name} = "{getattr(settings, name)}"')
    lines.append(f'etcd_endpoints = ["{settings.etcd_endpoints[0]}"]')
    path.write_text("\n".join(lines) + "\n")
    return path


def _connections(rabbit: PrivateRabbit) -> list[tuple[str, str]]:
    """(ssl, peer certificate subject) of every connection the node has."""
    listing = rabbit.ctl("-q", "list_connections", "--no-table-headers", "ssl",
                         "peer_cert_subject").stdout
    return [tuple(line.split("\t", 1)) for line in listing.splitlines()  # type: ignore[misc]
            if "\t" in line]


def test_a_fleet_over_tls_runs_calls_and_a_dag(
    services: Services, secure: SecureServices, tmp_path: Path, unique: str
) -> None:
    settings = secure.settings(services)
    assert settings.broker_url.startswith("amqps://")
    cluster = start_cluster(settings, tmp_path, workers=2)
    try:
        from_file = Settings.from_file(_toml(settings, tmp_path / "droplet.toml"))
        assert from_file.broker_cert_file == secure.certs.client_cert
        with droplet.connect(settings=from_file) as c:
            incr = c.register(lambda lib, x: x + 1, unique + "-incr")
            square = c.register(lambda lib, x: x * x, unique + "-square")
            futures = [incr(i) for i in range(20)]
            assert [f.get(timeout=30) for f in futures] == [i + 1 for i in range(20)]
            dag = unique + "-dag"
            assert c.register_dag(dag, [incr.name, square.name],
                                  [(incr.name, square.name)]) == (True, None)
            assert c.call_dag(dag, {incr.name: [4]}, direct_response=True, timeout=30) == 25
            assert c.call_dag(dag, {incr.name: [6]}).get(timeout=30) == 49
            # Every connection the node has (scheduler, workers, this client) is TLS with
            # the client certificate.
            connections = _connections(secure.rabbit)
            deadline = time.monotonic() + 30  # a worker may still be opening its connection
            while len(connections) < 4 and time.monotonic() < deadline:
                time.sleep(0.5)
                connections = _connections(secure.rabbit)
            print(f"{len(connections)} connections over TLS: {sorted(set(connections))}")
            assert len(connections) >= 4
            assert all(ssl == "true" and CLIENT_SUBJECT in subject
                       for ssl, subject in connections), connections
    finally:
        cluster.stop()


def _refused(settings: Settings, label: str) -> BrokerTlsError:
    started = time.monotonic()
    with pytest.raises(BrokerTlsError) as caught:
        droplet.connect(settings=settings).close()
    print(f"RabbitMQ, {label}: refused in {time.monotonic() - started:.2f}s: {caught.value}")
    assert isinstance(caught.value, droplet.BrokerError)
    assert isinstance(caught.value, droplet.TlsError)
    return caught.value


@pytest.mark.timeout(120)
def test_tls_refusals_are_clear_and_immediate(services: Services, secure: SecureServices) -> None:
    good = secure.settings(services)
    address = f"127.0.0.1:{secure.rabbit.port}"

    wrong_ca = _refused(good.with_(broker_ca_file=secure.certs.wrong_ca_file), "wrong CA")
    assert f"RabbitMQ at {address}" in str(wrong_ca)
    assert "not signed by a CA this client trusts" in str(wrong_ca)
    assert "set broker_ca_file (DROPLET_BROKER_CA_FILE)" in str(wrong_ca)

    no_ca = _refused(good.with_(broker_ca_file=None), "no CA (system CAs)")
    assert "broker_ca_file is not set" in str(no_ca)

    no_cert = _refused(good.with_(broker_cert_file=None, broker_key_file=None),
                       "no client certificate")
    assert "refused this client during the TLS handshake" in str(no_cert)
    assert "set broker_cert_file" in str(no_cert) and "broker_key_file" in str(no_cert)

    plaintext = _refused(good.with_(broker_url=secure.rabbit.url.replace("amqps:", "amqp:")),
                         "plaintext client")
    assert f"RabbitMQ at {address} accepts only TLS" in str(plaintext)
    assert "use an amqps:// broker_url" in str(plaintext)

    # The reverse: a TLS client at the (plaintext) port of the session's broker.
    if services.broker_url.startswith("amqp://"):
        tls_url = "amqps://" + services.broker_url[len("amqp://"):]
        not_tls = _refused(good.with_(broker_url=tls_url), "TLS client at a plaintext port")
        assert "does not answer with TLS" in str(not_tls)

    started = time.monotonic()
    with pytest.raises(BrokerCredentialsError, match=r"refused user 'guest'.*in broker_url"):
        droplet.connect(settings=good.with_(
            broker_url=secure.rabbit.url.replace("guest:guest", "guest:wrong"))).close()
    print(f"RabbitMQ, wrong password: refused in {time.monotonic() - started:.2f}s")

    missing = _refused(good.with_(broker_cert_file=str(secure.base / "nowhere.crt")),
                       "missing client certificate file")
    assert "cannot load the client certificate broker_cert_file" in str(missing)


@pytest.mark.timeout(180)
def test_a_server_with_an_expired_certificate_is_refused(
    services: Services, secure: SecureServices, tmp_path: Path
) -> None:
    rabbit = tls_rabbit(tmp_path / "rabbit", secure.certs, expired=True, label="tlsexpired")
    try:
        rabbit.start()
        error = _refused(secure.settings(services, broker_url=rabbit.url), "expired server")
        assert f"RabbitMQ at 127.0.0.1:{rabbit.port}" in str(error)
        assert "certificate that has expired" in str(error)
    finally:
        rabbit.stop()


@pytest.mark.timeout(120)
def test_a_worker_with_a_wrong_ca_says_why_in_its_log(
    services: Services, secure: SecureServices, tmp_path: Path
) -> None:
    """A worker keeps retrying (the operator may fix the server's side) and logs the cause."""
    settings = secure.settings(services, broker_ca_file=secure.certs.wrong_ca_file)
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
