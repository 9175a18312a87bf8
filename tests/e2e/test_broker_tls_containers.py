"""The TLS checks (tests/tls_checks.py) against containers: RabbitMQ and etcd from the
project's test images (tests/containers), switched to TLS by mounting the certificates the test
makes and a rabbitmq.conf; etcd serves TLS with authentication on. The fleet and the client
run on the host and reach the containers at 127.0.0.1, the address their certificate names.

Skipped, saying why, without a Docker engine or without the image builder (tests/containers).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from droplet.broker.amqp import connect
from droplet.cli.etcd_local import etcd_answers
from droplet.errors import BrokerError, BrokerTlsError
from droplet.settings import Settings
from tests.conftest import Services, _docker_answers
from tests.private_rabbit import RabbitTls
from tests.secure_services import enable_etcd_auth
from tests.tls_certs import TestCertificates, make_certificates
from tests.tls_checks import (
    check_broker_refusals,
    check_etcd_refusals,
    check_expired,
    over_tls,
    run_calls_and_a_dag,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not _docker_answers(), reason="needs a Docker engine"),
]

AMQPS_PORT = 5671
ETCD_PORT = 2379
IN_CONTAINER = "/tls"  # where the certificates and configuration are mounted


def _containers() -> Any:
    """tests.containers.services (the image builder's helpers), or a skip."""
    try:
        from tests.containers import services
    except ImportError as exc:
        pytest.skip(f"needs tests/containers (the test images): {exc}")
    return services


def _mount(base: Path, certs: TestCertificates) -> Path:
    """A directory for the containers: the certificates (readable by the containers'
    users, test keys only) and a rabbitmq.conf per server certificate."""
    base.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "server.crt", "server.key", "expired-server.crt",
                 "expired-server.key"):
        target = base / name
        shutil.copyfile(Path(certs.ca_file).parent / name, target)
        target.chmod(0o644)
    for stem in ("server", "expired-server"):
        tls = RabbitTls(f"{IN_CONTAINER}/ca.crt", f"{IN_CONTAINER}/{stem}.crt",
                        f"{IN_CONTAINER}/{stem}.key")
        (base / f"rabbitmq-{stem}.conf").write_text(
            tls.config(str(AMQPS_PORT)) + "loopback_users = none\n"
            "disk_free_limit.absolute = 50MB\n")
    return base


def _tls_answers(settings: Settings, refusal_ok: bool) -> bool:
    """The broker's TLS listener is up: a client gets through (or, with refusal_ok, is
    refused over TLS; a port that only accepts and closes is not up)."""
    try:
        connect(settings, "tls-wait").close()
        return True
    except BrokerTlsError:
        return refusal_ok
    except BrokerError:
        return False


@contextlib.contextmanager
def _rabbit(mount: Path, stem: str, settings: Settings) -> Iterator[tuple[str, Any]]:
    """A TLS-only RabbitMQ container presenting stem's certificate; yields its amqps URL and
    the container, once its TLS listener is up."""
    services = _containers()
    made = services.container(
        "rabbitmq", AMQPS_PORT,
        env={"RABBITMQ_CONFIG_FILE": f"{IN_CONTAINER}/rabbitmq-{stem}.conf"},
    ).with_volume_mapping(str(mount), IN_CONTAINER, "ro")
    with made as started:
        url = f"amqps://guest:guest@127.0.0.1:{services.host_port(started, AMQPS_PORT)}/%2F"
        probe = settings.with_(broker_url=url)
        refusal_ok = stem != "server"
        services.wait_until(started, lambda: _tls_answers(probe, refusal_ok),
                            "RabbitMQ (TLS)", 120)
        yield url, started


@contextlib.contextmanager
def _etcd(mount: Path) -> Iterator[str]:
    services = _containers()
    command = ["etcd", "--name", "droplet", "--data-dir", "/tmp/etcd-data",
               "--listen-client-urls", f"https://0.0.0.0:{ETCD_PORT}",
               "--advertise-client-urls", f"https://127.0.0.1:{ETCD_PORT}",
               "--cert-file", f"{IN_CONTAINER}/server.crt",
               "--key-file", f"{IN_CONTAINER}/server.key"]
    made = services.container("etcd", ETCD_PORT, command=command).with_volume_mapping(
        str(mount), IN_CONTAINER, "ro")
    with made as started:
        endpoint = f"127.0.0.1:{services.host_port(started, ETCD_PORT)}"
        ca_file = str(mount / "ca.crt")
        services.wait_until(started, lambda: etcd_answers(endpoint, 0.5, ca_file),
                            "etcd (TLS)", 60)
        enable_etcd_auth(endpoint, ca_file)
        yield endpoint


def _connections(started: Any) -> list[tuple[str, str]]:
    code, output = started.exec(["rabbitmqctl", "-q", "list_connections",
                                 "--no-table-headers", "ssl", "peer_cert_subject"])
    assert int(code) == 0, output
    return [(ssl, subject) for ssl, _, subject in
            (line.partition("\t") for line in output.decode().splitlines() if "\t" in line)]


@dataclass
class ContainerTls:
    certs: TestCertificates
    mount: Path
    etcd_endpoint: str
    broker_url: str
    rabbit: Any

    def settings(self, services: Services) -> Settings:
        return over_tls(services.settings(), self.broker_url, self.etcd_endpoint, self.certs)


@pytest.fixture(scope="module")
def tls_containers(tmp_path_factory: pytest.TempPathFactory,
                   services: Services) -> Iterator[ContainerTls]:
    _containers()  # skips at once when the image builder is absent
    base = tmp_path_factory.mktemp("tlsc")
    certs = make_certificates(base / "certs")
    mount = _mount(base / "mount", certs)
    with _etcd(mount) as endpoint:
        # The broker's address is known only once its container runs: _rabbit sets it.
        probe = over_tls(services.settings(), "amqps://127.0.0.1:1/%2F", endpoint, certs)
        with _rabbit(mount, "server", probe) as (url, rabbit):
            yield ContainerTls(certs, mount, endpoint, url, rabbit)


@pytest.mark.timeout(300)
def test_containers_a_fleet_over_tls_runs_calls_and_a_dag(
    services: Services, tls_containers: ContainerTls, tmp_path: Path, unique: str
) -> None:
    run_calls_and_a_dag(tls_containers.settings(services), tmp_path, unique,
                        lambda: _connections(tls_containers.rabbit))


@pytest.mark.timeout(300)
def test_containers_tls_refusals_are_clear_and_immediate(
    services: Services, tls_containers: ContainerTls, tmp_path: Path
) -> None:
    check_broker_refusals(tls_containers.settings(services), tls_containers.certs, tmp_path)


@pytest.mark.timeout(300)
def test_containers_etcd_refusals_are_clear_and_immediate(
    services: Services, tls_containers: ContainerTls
) -> None:
    check_etcd_refusals(services.settings(), tls_containers.etcd_endpoint, tls_containers.certs)


@pytest.mark.timeout(300)
def test_containers_a_server_with_an_expired_certificate_is_refused(
    services: Services, tls_containers: ContainerTls
) -> None:
    settings = tls_containers.settings(services)
    with _rabbit(tls_containers.mount, "expired-server", settings) as (url, _):
        check_expired(settings.with_(broker_url=url))
