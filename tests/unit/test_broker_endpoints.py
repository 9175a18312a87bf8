"""The lean transport reads a broker URL as pika.URLParameters does (broker/connecting.py
`endpoint`): host, port defaults, percent-decoded user, password and virtual host."""

from __future__ import annotations

import pika
import pytest

from droplet.broker.connecting import endpoint
from droplet.errors import BrokerError, BrokerTlsError
from droplet.settings import Settings


@pytest.mark.parametrize("url", [
    "amqp://guest:guest@127.0.0.1:5672/%2F",
    "amqp://alice:p%40ss%2Cw@mq.example:5673/vh",
    "amqp://u:p@MQ.Example/",
    "amqp://u:p@mq",
    "amqp://u:p@[::1]:5672/%2Fodd%20vhost",
    "amqp://mq.example/v/extra",
    "amqps://bob:pw@mq.example/%2F",
    "AMQPS://bob:pw@mq.example:5999/v",
])
def test_urls_read_as_pika_reads_them(url: str) -> None:
    ours = endpoint(Settings(broker_url=url), url)
    theirs = pika.URLParameters(url)
    assert (ours.host, ours.port, ours.vhost) == (theirs.host, theirs.port, theirs.virtual_host)
    assert (ours.username, ours.password) == (theirs.credentials.username,
                                              theirs.credentials.password)
    assert (ours.tls is not None) == url.lower().startswith("amqps")


def test_a_bad_port_and_a_missing_ca_are_named() -> None:
    with pytest.raises(BrokerError, match="bad broker URL"):
        endpoint(Settings(), "amqp://h:notaport/")
    settings = Settings(broker_url="amqps://u:p@h/%2F", broker_ca_file="/nonexistent/ca.pem")
    with pytest.raises(BrokerTlsError, match="broker_ca_file"):
        endpoint(settings, settings.broker_url)
