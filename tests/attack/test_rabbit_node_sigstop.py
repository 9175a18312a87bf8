"""Attack (real 3-node RabbitMQ cluster with quorum queues, 3 etcd members; local processes):
SIGSTOP the RabbitMQ node the client is connected to, while it sends calls and waits for
their replies. A stopped node keeps its TCP connections open and answers nothing (a hung VM,
a one-way partition): only heartbeats notice it. The client's exclusive reply queue lives on
that node, and so do the leaders of the quorum queues it declared.

Held: the client, the scheduler and the workers notice it by their heartbeats and reconnect
to another node; every call is answered with its own result, none waits forever. But the
quorum queues whose leader is on the hung node elect a new one only once the other nodes
declare it down, after Erlang's net_ticktime (60 s by default): with the defaults the calls
were answered 72 s after the SIGSTOP; with `net_ticktime = 10` in rabbitmq.conf, 17 s. The
deploy guide now says so; this test runs the nodes with net_ticktime = 10.
Run: .venv/bin/python -m pytest -q tests/attack/test_rabbit_node_sigstop.py
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

import droplet
from tests.conftest import start_cluster
from tests.ha_backend import report
from tests.ha_services import HaServices, missing_tools
from tests.private_rabbit import PrivateRabbit

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.cluster,
              pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))]

_HEARTBEAT_S = 4
_NET_TICKTIME_S = 10  # deploy/README.md recommends it for a cluster


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaServices]:
    services = HaServices(tmp_path_factory.mktemp("ha"))
    for node in services.rabbit.nodes:
        node.extra_config += f"net_ticktime = {_NET_TICKTIME_S}\n"
    services.start()
    yield services
    services.stop()


def _beam_pid(node: PrivateRabbit) -> int:
    """The node's Erlang VM (its pid file), not the shared epmd."""
    return int((node.base / "rabbit.pid").read_text().strip())


@pytest.mark.timeout(300)  # starts both clusters
def test_calls_complete_when_the_clients_node_hangs(ha: HaServices, tmp_path: Path) -> None:
    settings = ha.settings(broker_heartbeat_s=_HEARTBEAT_S)
    cluster = start_cluster(settings, tmp_path, workers=2)
    stopped: int | None = None
    try:
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: x * 2, "double")
            assert client.call("double", 1).get(timeout=30) == 2
            node = ha.rabbit_node_of("droplet-client").node
            stopped = _beam_pid(node)
            os.kill(stopped, signal.SIGSTOP)
            started = time.monotonic()
            futures = [client.call("double", i) for i in range(10)]
            results = [f.get(timeout=90) for f in futures]
            took = time.monotonic() - started
            assert results == [2 * i for i in range(10)]
            report(f"client's RabbitMQ node {node.port} SIGSTOPped: 10 calls answered in "
                   f"{took:.1f}s (heartbeat {_HEARTBEAT_S}s, net_ticktime {_NET_TICKTIME_S}s)")
            assert took < 3 * _NET_TICKTIME_S + 10, f"calls took {took:.1f}s"
    finally:
        if stopped is not None:
            with suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        cluster.stop()
