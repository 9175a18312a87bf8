"""Broker connection parameters: TLS and credentials come from the settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from droplet.broker.rabbitmq import connection_parameters
from droplet.errors import BrokerError
from droplet.settings import Settings


def test_plain_url_carries_credentials_and_heartbeat() -> None:
    params = connection_parameters(
        Settings(broker_url="amqp://alice:pw@mq.example:5673/vh", broker_heartbeat_s=7), "x"
    )
    assert (params.host, params.port, params.virtual_host) == ("mq.example", 5673, "vh")
    assert params.credentials.username == "alice"
    assert params.credentials.password == "pw"
    assert params.heartbeat == 7
    assert params.ssl_options is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_amqps_uses_the_configured_ca(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
         "-out", "ca.crt", "-subj", "/CN=test", "-days", "1"],
        check=True, capture_output=True, cwd=tmp_path, timeout=60,
    )
    settings = Settings(broker_url="amqps://bob:pw@mq.example:5671/%2F",
                        broker_ca_file=str(tmp_path / "ca.crt"))
    params = connection_parameters(settings, "x")
    assert params.ssl_options is not None
    assert params.ssl_options.server_hostname == "mq.example"
    assert params.port == 5671


def test_a_bad_url_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="URL"):
        connection_parameters(Settings(broker_url="amqp://h:notaport/"), "x")
