"""Attack: broker_url lists with garbage, other schemes, upper case, and passwords in them.

pika reads `http://` as plaintext and `https://` as TLS with the system's CAs only: Droplet
took both, so a URL mistyped `https://` went to RabbitMQ without broker_ca_file or the client
certificate, and `AMQPS://` (pika takes any case) did too (Droplet built its TLS context only
for a lower-case `amqps://`). A bare host said "bad broker URL: list index out of range". And
`droplet up` printed a list of nodes as one URL: the first nodes vanished from its banner.
Settings now take only amqp:// and amqps:// (any case) and name a bad URL without its
password, even when a comma in the password cut the URL in two.
Run: .venv/bin/python -m pytest -q tests/attack/test_broker_url_lists.py
"""

from __future__ import annotations

import pytest

from droplet.broker.rabbitmq_connect import connection_parameters
from droplet.errors import BrokerTlsError, ConfigurationError
from droplet.settings import Settings, redacted_url

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("url", [
    "https://u:hunter2@127.0.0.1:5671/%2F",  # would be TLS without broker_ca_file
    "http://u:hunter2@127.0.0.1:5672/%2F",
    "amqp://127.0.0.1:5672/,127.0.0.1:5673",  # a bare host among nodes
    "rabbit.example:5672",
    "amqp://u:hunter2@127.0.0.1:5672/,tcp://u:hunter2@127.0.0.1:5673/",
])
def test_a_broker_url_that_is_not_amqp_is_refused_by_name(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not an amqp:// or amqps:// URL") as bad:
        Settings(broker_url=url)
    assert "hunter2" not in str(bad.value)


def test_a_password_cut_by_a_comma_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as bad:
        Settings(broker_url="amqp://u:hunt,er2@127.0.0.1:5672/%2F")
    assert "hunt" not in str(bad.value) and "er2" not in str(bad.value)
    assert "%2C" in str(bad.value)


def test_an_upper_case_amqps_url_uses_the_configured_ca() -> None:
    missing = "/nonexistent/droplet-attack-ca.pem"
    settings = Settings(broker_url="AMQPS://u:p@127.0.0.1/%2F", broker_ca_file=missing)
    with pytest.raises(BrokerTlsError, match="broker_ca_file"):
        connection_parameters(settings, "x")  # the CA is loaded (and missing), not ignored
    ok = Settings(broker_url="AMQPS://u:p@127.0.0.1/%2F")
    params = connection_parameters(ok, "x")
    assert params.ssl_options is not None and params.ssl_options.server_hostname == "127.0.0.1"
    assert params.port == 5671


def test_mixed_duplicate_and_many_node_lists_are_taken_as_given() -> None:
    nodes = [f"amqp://u:p@10.0.0.{i}:5672/%2F" for i in range(50)]
    mixed = Settings(broker_url=",".join([*nodes, nodes[0], "amqps://u:p@10.0.1.1:5671/%2F"]))
    assert len(mixed.broker_urls) == 52 and mixed.broker_cluster


def test_droplet_ups_banner_shows_every_node_and_no_password() -> None:
    shown = redacted_url("amqp://u:pw1@a:5672/%2F,amqps://v:pw2@b:5671/%2F,amqp://c/")
    assert shown == "amqp://u:***@a:5672/%2F,amqps://v:***@b:5671/%2F,amqp://c/"
