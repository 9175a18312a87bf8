"""Attack on the joined writes (broker/amqp_wire.py `flush`, broker/rabbitmq.py `_write_out`),
both transports: the broker goes away while frames are being written, one by one and inside
written_together() (killed: the socket dies; its app stopped: it closes the connection). The
publisher must get a BrokerError promptly (no hang, no assertion from pika's buffer
bookkeeping), and a fresh connection to the restarted broker must work."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.errors import BrokerError
from droplet.settings import Settings
from tests.broker_transports import connect, transports
from tests.private_rabbit import PrivateRabbit, needs_rabbitmq_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    needs_rabbitmq_server,
]


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    node = PrivateRabbit(tmp_path_factory.mktemp("killwrite") / "rabbit", label="killwrite")
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.mark.parametrize(("together", "kill"), [(False, True), (True, False)],
                         ids=["one-by-one-killed", "written-together-stopped"])
@transports
def test_publishing_when_the_broker_goes_away(rabbit: PrivateRabbit, together: bool,
                                              kill: bool, transport: str) -> None:
    settings = Settings(broker_url=rabbit.url, etcd_endpoints=("127.0.0.1:1",),
                        namespace=f"t{uuid.uuid4().hex[:8]}")
    conn = connect(transport, settings, "kill-writes", confirms=True)
    queue = f"kw-{uuid.uuid4().hex[:8]}"
    conn.declare(Topology(queues=[QueueSpec(queue, durable=True)]))
    away = threading.Timer(1.0, rabbit.kill if kill else lambda: rabbit.ctl("stop_app"))
    away.start()
    bodies = [b"s" * 50, b"m" * 30_000, b"L" * 400_000]
    started = time.monotonic()
    with pytest.raises(BrokerError):
        i = 0
        while time.monotonic() - started < 30:
            if together:
                with conn.written_together():
                    for j in range(20):
                        conn.publish(queue, bodies[(i + j) % 3], on_confirm=lambda ok: None)
            else:
                conn.publish(queue, bodies[i % 3], on_confirm=lambda ok: None)
            conn.poll(0)
            i += 1
    assert time.monotonic() - started < 15, "the dead broker was noticed late"
    conn.close()
    away.join(60)  # stop_app returns after the connection is already closed
    if kill:
        rabbit.start()
    else:
        rabbit.ctl("start_app")
    again = connect(transport, settings, "kill-writes-2", confirms=True)
    try:
        again.declare(Topology(queues=[QueueSpec(queue, durable=True)]))
        confirmed: list[bool] = []
        again.publish(queue, b"after", on_confirm=confirmed.append)
        for _ in range(100):
            again.poll(0.05)
            if confirmed:
                break
        assert confirmed == [True]
    finally:
        again.close()
