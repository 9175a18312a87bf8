"""Attack: a broker_url list whose first node accepts TCP connections but never answers (a
hung RabbitMQ VM, a SIGSTOPped node, a load balancer whose backend is gone).

pika gives up on the AMQP handshake after its stack timeout (15 s) with
`AMQPConnectorStackTimeout`, which is not one of pika's AMQPError classes: it escaped the
walk over the nodes raw, so the next node of the list was never tried, `droplet.connect`
raised a pika exception instead of a BrokerError, and a service reconnecting (whose rotation
had not moved, since nothing connected) tried the hung node first again, for ever, although
another node served. README "Configuration": broker_url names a cluster's nodes, "the first
that answers".
Run: .venv/bin/python -m pytest -q tests/attack/test_hung_broker_node_in_the_list.py
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from droplet.errors import BrokerError
from droplet.runtime import broker_factory
from tests.conftest import Services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def hung_url() -> Iterator[str]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts (the kernel does) and never says a word
        yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/%2F"


def test_a_hung_first_node_is_skipped_for_the_next(services: Services, hung_url: str) -> None:
    settings = services.settings()
    nodes = settings.with_(broker_url=f"{hung_url},{settings.broker_url}")
    connect = broker_factory(nodes, "attack-hung-node")
    started = time.monotonic()
    conn = connect()
    try:
        assert conn.is_open
    finally:
        conn.close()
    assert time.monotonic() - started < 30
    started = time.monotonic()
    conn = connect()  # the rotation now starts after the node that answered: no wait
    conn.close()
    assert time.monotonic() - started < 5


def test_a_lone_hung_node_is_a_broker_error(services: Services, hung_url: str) -> None:
    settings = services.settings().with_(broker_url=hung_url)
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1"):
        broker_factory(settings, "attack-hung-node")()
