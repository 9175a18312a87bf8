"""What the TLS tests check, whatever runs RabbitMQ and etcd (a local node or containers):
a fleet over TLS runs calls and a DAG, and each TLS mismatch is refused at once, clearly."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import droplet
from droplet.errors import (
    BrokerCredentialsError,
    BrokerTlsError,
    StoreCredentialsError,
    StoreTlsError,
)
from droplet.settings import Settings
from tests.conftest import start_cluster
from tests.secure_services import ETCD_PASSWORD, ETCD_USER
from tests.tls_certs import TestCertificates

CLIENT_SUBJECT = "droplet-test-client"
# Refusals must come at once: with this retry budget a refusal taken for "etcd is away" would
# outlast the test's timeout.
LONG_RETRY_S = 600.0
# (ssl, peer certificate subject) of each connection the broker has.
ConnectionLister = Callable[[], list[tuple[str, str]]]


def over_tls(settings: Settings, broker_url: str, etcd_endpoint: str,
             certs: TestCertificates) -> Settings:
    """settings with everything over TLS: amqps with the test CA and the client
    certificate, etcd with TLS and its password."""
    return settings.with_(
        broker_url=broker_url, broker_ca_file=certs.ca_file,
        broker_cert_file=certs.client_cert, broker_key_file=certs.client_key,
        etcd_endpoints=(etcd_endpoint,), etcd_ca_file=certs.ca_file,
        etcd_user=ETCD_USER, etcd_password=ETCD_PASSWORD,
    )


def _toml(settings: Settings, path: Path) -> Path:
    """The TLS part of settings as a configuration file, as an operator would write it."""
    lines = ["[droplet]"]
    for name in ("broker_url", "broker_ca_file", "broker_cert_file", "broker_key_file",
                 "etcd_ca_file", "etcd_user", "etcd_password", "namespace"):
        lines.append(f'{name} = "{getattr(settings, name)}"')
    lines.append(f'etcd_endpoints = ["{settings.etcd_endpoints[0]}"]')
    path.write_text("\n".join(lines) + "\n")
    return path


def run_calls_and_a_dag(settings: Settings, log_dir: Path, unique: str,
                        connections: ConnectionLister | None = None) -> None:
    """A scheduler and two workers (`droplet` processes, configured through the
    environment) and a client (configured from a TOML file) run calls and a DAG; with
    `connections`, every connection the broker has is TLS with the client certificate."""
    assert settings.broker_url.startswith("amqps://")
    cluster = start_cluster(settings, log_dir, workers=2)
    try:
        from_file = Settings.from_file(_toml(settings, log_dir / "droplet.toml"))
        assert from_file.broker_cert_file == settings.broker_cert_file
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
            if connections is not None:
                _all_over_tls(connections)
    finally:
        cluster.stop()


def _all_over_tls(connections: ConnectionLister) -> None:
    """Scheduler, workers and client: at least 4 connections, each TLS with our client
    certificate."""
    listed = connections()
    deadline = time.monotonic() + 30  # a worker may still be opening its connection
    while len(listed) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        listed = connections()
    print(f"{len(listed)} connections over TLS: {sorted(set(listed))}")
    assert len(listed) >= 4
    assert all(ssl == "true" and CLIENT_SUBJECT in subject for ssl, subject in listed), listed


def refused(settings: Settings, label: str) -> BrokerTlsError:
    """The BrokerTlsError connecting with settings raises (printed with its time)."""
    started = time.monotonic()
    with pytest.raises(BrokerTlsError) as caught:
        droplet.connect(settings=settings).close()
    print(f"RabbitMQ, {label}: refused in {time.monotonic() - started:.2f}s: {caught.value}")
    assert isinstance(caught.value, droplet.BrokerError)
    assert isinstance(caught.value, droplet.TlsError)
    return caught.value


def check_broker_refusals(good: Settings, certs: TestCertificates, scratch: Path) -> None:
    """With good's TLS broker: a wrong CA, the system's CAs only, no client certificate, a
    plaintext client, a wrong password and an unreadable certificate file are each refused
    with an error naming the server and what to set."""
    parts = urlsplit(good.broker_url)
    address = f"{parts.hostname}:{parts.port}"

    wrong_ca = refused(good.with_(broker_ca_file=certs.wrong_ca_file), "wrong CA")
    assert f"RabbitMQ at {address}" in str(wrong_ca)
    assert "not signed by a CA this client trusts" in str(wrong_ca)
    assert "set broker_ca_file (DROPLET_BROKER_CA_FILE)" in str(wrong_ca)

    no_ca = refused(good.with_(broker_ca_file=None), "no CA (system CAs)")
    assert "broker_ca_file is not set" in str(no_ca)

    no_cert = refused(good.with_(broker_cert_file=None, broker_key_file=None),
                      "no client certificate")
    assert "refused this client during the TLS handshake" in str(no_cert)
    assert "set broker_cert_file" in str(no_cert) and "broker_key_file" in str(no_cert)

    plaintext = refused(good.with_(broker_url=good.broker_url.replace("amqps:", "amqp:", 1)),
                        "plaintext client")
    assert f"RabbitMQ at {address} accepts only TLS" in str(plaintext)
    assert "use an amqps:// broker_url" in str(plaintext)

    started = time.monotonic()
    wrong_password = good.broker_url.replace("guest:guest", "guest:wrong", 1)
    with pytest.raises(BrokerCredentialsError, match=r"refused user 'guest'.*in broker_url"):
        droplet.connect(settings=good.with_(broker_url=wrong_password)).close()
    print(f"RabbitMQ, wrong password: refused in {time.monotonic() - started:.2f}s")

    missing = refused(good.with_(broker_cert_file=str(scratch / "nowhere.crt")),
                      "missing client certificate file")
    assert "cannot load the client certificate broker_cert_file" in str(missing)


def check_expired(settings: Settings) -> None:
    """settings point at a broker presenting an expired certificate: refused, saying so."""
    parts = urlsplit(settings.broker_url)
    error = refused(settings, "expired server")
    assert f"RabbitMQ at {parts.hostname}:{parts.port}" in str(error)
    assert "certificate that has expired" in str(error)


def check_etcd_refusals(settings: Settings, endpoint: str, certs: TestCertificates) -> None:
    """With etcd at endpoint serving TLS with authentication (root, ETCD_PASSWORD): a wrong
    password, no user, a wrong CA and a plaintext client are each refused at once, naming
    the endpoint and the setting to change."""
    good = settings.with_(
        etcd_endpoints=(endpoint,), etcd_ca_file=certs.ca_file,
        etcd_user=ETCD_USER, etcd_password=ETCD_PASSWORD, store_retry_s=LONG_RETRY_S,
    )
    no_user: dict[str, Any] = {"etcd_user": None, "etcd_password": None}
    cases: list[tuple[str, Settings, type[Exception], str]] = [
        ("wrong password", good.with_(etcd_password="wrong"), StoreCredentialsError,
         "etcd_password"),
        ("no user", good.with_(**no_user), StoreCredentialsError, "set etcd_user"),
        ("wrong CA", good.with_(etcd_ca_file=certs.wrong_ca_file), StoreTlsError,
         "not signed by a CA this client trusts.*set etcd_ca_file"),
        ("wrong CA, no user", good.with_(etcd_ca_file=certs.wrong_ca_file, **no_user),
         StoreTlsError, "set etcd_ca_file"),
        ("plaintext", good.with_(etcd_ca_file=None), StoreTlsError,
         "accepts only TLS.*set etcd_ca_file"),
        ("plaintext, no user", good.with_(etcd_ca_file=None, **no_user), StoreTlsError,
         "accepts only TLS.*set etcd_ca_file"),
    ]
    for label, bad, error, message in cases:
        started = time.monotonic()
        with pytest.raises(error, match=message) as caught, droplet.connect(settings=bad) as c:
            c.put_object("probe", label)
        print(f"etcd, {label}: refused in {time.monotonic() - started:.2f}s: {caught.value}")
        assert endpoint in str(caught.value), label
        assert isinstance(caught.value, droplet.StoreError), label
