"""TLS failures explained (droplet/tls.py): each failure text that ssl, pika and gRPC give
names the setting to change; the client context refuses unreadable files by name."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from droplet.broker.rabbitmq import connection_parameters
from droplet.cli.etcd_local import free_port
from droplet.errors import (
    BrokerTlsError,
    ConfigurationError,
    StoreCredentialsError,
    StoreTlsError,
)
from droplet.settings import Settings
from droplet.tls import broker_peer, client_context, etcd_refusal, explain_failure, speaks_tls
from tests.tls_certs import TestCertificates, make_certificates

# Failure texts as pika and gRPC report them (seen against a TLS RabbitMQ node and etcd).
WRONG_CA = ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: self-signed certificate in certificate chain (_ssl.c:1006)")
EXPIRED = ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
           "failed: certificate has expired (_ssl.c:1006)")
NO_CLIENT_CERT = ("IncompatibleProtocolError: StreamLostError: (\"Stream connection lost: "
                  "SSLError(1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert "
                  "certificate required (_ssl.c:2580)')\",)")
NO_CLIENT_CERT_EOF = ("IncompatibleProtocolError: StreamLostError: (\"Stream connection lost: "
                      "SSLEOFError(8, 'EOF occurred in violation of protocol (_ssl.c:2427)')\",)")
OTHER_HOST = ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
              "failed: Hostname mismatch, certificate is not valid for 'mq.example'.")
NOT_TLS = "SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
ETCD_WRONG_CA = ("UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: "
                 "ipv4:127.0.0.1:2379: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
                 "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
                 "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate")
ETCD_BAD_PASSWORD = ("INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID "
                     "or password")
RESET = ("IncompatibleProtocolError: StreamLostError: (\"Stream connection lost: "
         "ConnectionResetError(104, 'Connection reset by peer')\",)")


@pytest.mark.parametrize(("detail", "expected"), [
    (WRONG_CA, "not signed by a CA this client trusts (broker_ca_file='/ca.pem'): set "
               "broker_ca_file (DROPLET_BROKER_CA_FILE)"),
    (EXPIRED, "presented a certificate that has expired"),
    (NO_CLIENT_CERT, "refused this client during the TLS handshake (broker_cert_file is not "
                     "set): it wants a client certificate"),
    (OTHER_HOST, "certificate issued for another host"),
    (NOT_TLS, "does not answer with TLS"),
])
def test_tls_failures_name_what_to_set(detail: str, expected: str) -> None:
    peer = broker_peer(Settings(broker_ca_file="/ca.pem"), "mq.example:5671", tls=True)
    explained = explain_failure(detail, peer)
    assert explained is not None
    assert explained.startswith("RabbitMQ at mq.example:5671 ")
    assert expected in explained


def test_other_failures_are_not_tls_matters() -> None:
    peer = broker_peer(Settings(), f"127.0.0.1:{free_port()}", tls=True)
    assert explain_failure("AMQPConnectionError: ConnectionRefusedError(111)", peer) is None
    plain = broker_peer(Settings(), f"127.0.0.1:{free_port()}", tls=False)
    assert explain_failure(RESET, plain) is None  # nothing listens there, let alone TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_port(certs: TestCertificates) -> Iterator[int]:
    """A loopback port that answers with TLS (one handshake at a time), closed at the end."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.timeout(30)
def test_a_plaintext_client_at_a_tls_port_is_told_to_use_tls(tls_port: int) -> None:
    address = f"127.0.0.1:{tls_port}"
    assert speaks_tls(address)
    explained = explain_failure(RESET, broker_peer(Settings(), address, tls=False))
    assert explained is not None
    assert f"RabbitMQ at {address} accepts only TLS" in explained
    assert "use an amqps:// broker_url" in explained
    settings = Settings(etcd_endpoints=(address,))
    refused = etcd_refusal(settings, "UNAVAILABLE: Socket closed", probe=True)
    assert isinstance(refused, StoreTlsError)
    assert "set etcd_ca_file (DROPLET_ETCD_CA_FILE)" in str(refused)
    assert etcd_refusal(settings, "UNAVAILABLE: Socket closed", probe=False) is None


@pytest.mark.timeout(30)
def test_a_hang_up_in_the_handshake_is_a_refusal_only_from_a_tls_server(tls_port: int) -> None:
    """A TLS server that hangs up refused our certificate; a port that accepts and closes (a
    proxy with its backend down) is not a TLS matter, and is retried."""
    speaking = broker_peer(Settings(), f"127.0.0.1:{tls_port}", tls=True)
    explained = explain_failure(NO_CLIENT_CERT_EOF, speaking)
    assert explained is not None
    assert "set broker_cert_file (DROPLET_BROKER_CERT_FILE) and broker_key_file" in explained
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers TLS
        silent_peer = broker_peer(Settings(), f"127.0.0.1:{silent.getsockname()[1]}", tls=True)
        closer = threading.Thread(target=lambda: silent.accept()[0].close(), daemon=True)
        closer.start()
        assert explain_failure(NO_CLIENT_CERT_EOF, silent_peer) is None
        closer.join(5)


def test_etcd_refusals() -> None:
    tls = Settings(etcd_endpoints=("10.0.0.1:2379",), etcd_ca_file="/ca.pem",
                   etcd_user="root", etcd_password="x")
    wrong_ca = etcd_refusal(tls, ETCD_WRONG_CA, probe=False)
    assert isinstance(wrong_ca, StoreTlsError)
    assert "etcd at 10.0.0.1:2379 presented a certificate not signed" in str(wrong_ca)
    assert "set etcd_ca_file" in str(wrong_ca)
    password = etcd_refusal(tls, ETCD_BAD_PASSWORD, probe=False)
    assert isinstance(password, StoreCredentialsError)
    assert "refused user 'root': check etcd_user and etcd_password" in str(password)
    no_user = etcd_refusal(tls.with_(etcd_user=None), "INVALID_ARGUMENT: etcdserver: user "
                           "name is empty", probe=False)
    assert isinstance(no_user, StoreCredentialsError)
    refused_port = "UNAVAILABLE: failed to connect to all addresses: Connection refused"
    assert etcd_refusal(tls, refused_port, probe=True) is None  # etcd away: retried


def test_client_context_refuses_unreadable_files_by_name(
    tmp_path: Path, certs: TestCertificates
) -> None:
    with pytest.raises(ConfigurationError, match="cannot load broker_ca_file"):
        client_context("broker_ca_file", str(tmp_path / "none.pem"), "broker_cert_file", None,
                       "broker_key_file", None)
    with pytest.raises(ConfigurationError, match="broker_key_file is set but broker_cert_file"):
        client_context("broker_ca_file", certs.ca_file, "broker_cert_file", None,
                       "broker_key_file", certs.client_key)
    with pytest.raises(ConfigurationError, match="cannot load the client certificate"):
        client_context("broker_ca_file", certs.ca_file, "broker_cert_file", certs.client_cert,
                       "broker_key_file", certs.server_key)  # a key of another certificate
    context = client_context("broker_ca_file", certs.ca_file, "broker_cert_file",
                             certs.client_cert, "broker_key_file", certs.client_key)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    settings = Settings(broker_url="amqps://u:p@127.0.0.1:5671/%2F",
                        broker_ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(BrokerTlsError, match="broker_ca_file"):
        connection_parameters(settings, "x")


def test_tls_settings_come_from_the_environment_and_toml(tmp_path: Path) -> None:
    env = {"DROPLET_BROKER_URL": "amqps://u:p@mq:5671/%2F", "DROPLET_BROKER_CA_FILE": "/ca",
           "DROPLET_BROKER_CERT_FILE": "/c", "DROPLET_BROKER_KEY_FILE": "/k",
           "DROPLET_ETCD_CA_FILE": "/eca", "DROPLET_ETCD_USER": "root",
           "DROPLET_ETCD_PASSWORD": "pw"}
    s = Settings.from_env(env)
    assert (s.broker_ca_file, s.broker_cert_file, s.broker_key_file) == ("/ca", "/c", "/k")
    assert (s.etcd_ca_file, s.etcd_user, s.etcd_password) == ("/eca", "root", "pw")
    config = tmp_path / "d.toml"
    config.write_text('[droplet]\nbroker_ca_file = "/ca"\netcd_cert_file = "/ec"\n'
                      'etcd_key_file = "/ek"\n')
    f = Settings.from_file(config)
    assert (f.broker_ca_file, f.etcd_cert_file, f.etcd_key_file) == ("/ca", "/ec", "/ek")


def test_unreadable_etcd_tls_files_are_named(tmp_path: Path, certs: TestCertificates) -> None:
    from droplet.store.etcd import EtcdKV

    with pytest.raises(StoreTlsError, match="cannot read etcd_ca_file"):
        EtcdKV(Settings(etcd_ca_file=str(tmp_path / "none.pem")))
    with pytest.raises(StoreTlsError, match="etcd_key_file is set but etcd_cert_file is not"):
        EtcdKV(Settings(etcd_ca_file=certs.ca_file, etcd_key_file=certs.client_key))


def test_a_service_refused_over_tls_logs_why_as_an_error_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from droplet.broker.session import run_with_reconnect

    stop = threading.Event()
    attempts: list[int] = []

    def connect() -> Any:
        attempts.append(1)
        if len(attempts) >= 2:
            stop.set()
        raise BrokerTlsError("RabbitMQ at h:5671 presented ...: set broker_ca_file")

    with caplog.at_level("ERROR", logger="droplet.broker.session"):
        run_with_reconnect("worker w", connect, lambda conn: None, stop)
    assert len(attempts) == 2  # retried
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "set broker_ca_file" in errors[0]
