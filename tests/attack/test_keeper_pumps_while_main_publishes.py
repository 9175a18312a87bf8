"""Attack on the joined writes (broker/rabbitmq.py `_write_out`) with the worker's two threads:
the connection keeper (worker/keeper.py) pumps the connection every few milliseconds while the
main thread publishes (lib.send from a long function: WorkerPort takes keeper.using()), small
and large messages, some inside written_together(), and acks what it consumes. Nothing may be
lost, reordered or confirmed wrongly."""

from __future__ import annotations

import time
import uuid

import pytest

from droplet.broker.interface import Delivery, QueueSpec, Topology
from droplet.settings import Settings
from droplet.worker.keeper import ConnectionKeeper
from tests.broker_transports import connect, transports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@transports
def test_keeper_pumps_while_the_main_thread_publishes(settings: Settings, transport: str
                                                     ) -> None:
    conn = connect(transport, settings, "keeper-writes", confirms=True)
    queue = f"kpw-{uuid.uuid4().hex[:8]}"
    conn.declare(Topology(queues=[QueueSpec(queue, durable=False, auto_delete=True)]))
    conn.consume(queue, prefetch=1000)
    keeper = ConnectionKeeper(grace_s=0.0, interval_s=0.001)
    keeper.start()
    confirms: list[tuple[int, bool]] = []
    bodies = [bytes([i % 251]) * (200_000 if i % 17 == 0 else 40 + i) + i.to_bytes(4, "big")
              for i in range(400)]
    got: list[Delivery] = []
    acked = 0
    try:
        with keeper.attached(conn), keeper.running():
            time.sleep(0.05)
            for start in range(0, len(bodies), 8):
                with keeper.using():
                    if start % 16 == 0:
                        with conn.written_together():
                            for i in range(start, start + 8):
                                conn.publish(queue, bodies[i], on_confirm=lambda ok, i=i:
                                             confirms.append((i, ok)))
                    else:
                        for i in range(start, start + 8):
                            conn.publish(queue, bodies[i], on_confirm=lambda ok, i=i:
                                         confirms.append((i, ok)))
                    got += conn.poll(0)
                    for d in got[acked:]:
                        conn.ack(d.tag)
                    acked = len(got)
                time.sleep(0.001)  # the keeper gets the connection in between
        deadline = time.monotonic() + 20
        while (len(got) < len(bodies) or len(confirms) < len(bodies)) and \
                time.monotonic() < deadline:
            got += conn.poll(0.05)
        assert [d.body for d in got] == bodies, "lost or reordered under the keeper"
        assert sorted(confirms) == [(i, True) for i in range(len(bodies))]
        assert conn.is_open
    finally:
        keeper.stop()
        conn.close()
