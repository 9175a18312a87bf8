"""Attack on the joined socket writes (broker/rabbitmq.py `_write_out`) over amqps: with a
tiny socket send buffer every write is partial or refused (SSL_ERROR_WANT_WRITE), so pika
re-tries what it could not send while more frames join it. Small and large messages mixed in
one written_together(), acks among them: every message must arrive whole and in order, and
every publisher confirm must come back positive, exactly once."""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.settings import Settings
from tests.broker_transports import connect, drain, on_send, raw_socket, transports
from tests.private_rabbit import PrivateRabbit, needs_rabbitmq_server
from tests.secure_services import tls_rabbit
from tests.tls_certs import make_certificates

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(150),
    needs_rabbitmq_server,
]


@pytest.fixture(scope="module")
def tls_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = tmp_path_factory.mktemp("tls-writes")
    certs = make_certificates(base / "certs")
    rabbit: PrivateRabbit = tls_rabbit(base / "rabbit", certs, label="tlswrites")
    try:
        rabbit.start()
        yield Settings(broker_url=rabbit.url, broker_ca_file=certs.ca_file,
                       broker_cert_file=certs.client_cert, broker_key_file=certs.client_key,
                       etcd_endpoints=("127.0.0.1:1",), namespace=f"t{uuid.uuid4().hex[:8]}")
    finally:
        rabbit.stop()


def _squeezed(conn: Any) -> None:
    """The smallest send buffer the kernel allows: most writes are partial."""
    sock: Any = raw_socket(conn)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024)



def _bodies(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * size + i.to_bytes(4, "big") for i, size in enumerate(sizes)]


# joined (<= 64 frames, <= 64 KiB), then not joined (large ones, many frames)
_SMALL = [10, 3000, 3, 9000, 17, 20_000, 1, 5, 100, 100, 100, 100, 100, 15_000, 9]
_MIXED = [10, 40_000, 3, 300_000, 17, 70_000, 1, 2_000_000, 5] + [100] * 70 + [65_000, 9]


def _watched(conn: Any) -> list[str]:
    """Records each send's fate: 'sent' whole, 'part' partial, 'wait' refused for now."""
    fates: list[str] = []

    def send(real: Any, data: Any) -> int:
        try:
            n = int(real(data))
        except ssl.SSLWantWriteError:
            fates.append("wait")
            raise
        fates.append("sent" if n == len(data) else "part")
        return n

    on_send(conn, send)
    return fates


@transports
@pytest.mark.parametrize("sizes", [_SMALL, _MIXED], ids=["joined", "mixed"])
def test_sizes_in_one_written_together_over_tls(tls_settings: Settings, sizes: list[int],
                                                transport: str) -> None:
    conn = connect(transport, tls_settings, "tls-writes", confirms=True)
    try:
        assert isinstance(raw_socket(conn), ssl.SSLSocket)
        queue = f"tlsw-{uuid.uuid4().hex[:8]}"
        conn.declare(Topology(queues=[QueueSpec(queue, durable=True)]))
        conn.consume(queue, prefetch=500)
        _squeezed(conn)
        fates = _watched(conn)
        bodies = _bodies(sizes)
        confirms: list[tuple[int, bool]] = []
        with conn.written_together():
            for i, body in enumerate(bodies):
                conn.publish(queue, body, persistent=i % 2 == 0, mandatory=True,
                             on_confirm=lambda ok, i=i: confirms.append((i, ok)))
        got = drain(conn, len(bodies), rounds=600)
        assert [d.body for d in got] == bodies, "a frame lost, corrupted or out of order"
        assert "wait" in fates, f"the squeezed socket never refused a write: {fates[:20]}"
        # acks joined with publishes: half inside one written_together, half one by one
        with conn.written_together():
            for d in got[: len(got) // 2]:
                conn.ack(d.tag)
                conn.publish(queue, b"again" + d.body[-4:], persistent=False)
        for d in got[len(got) // 2:]:
            conn.ack(d.tag)
        again = drain(conn, len(got) // 2, rounds=600)
        assert [d.body for d in again] == [b"again" + d.body[-4:] for d in got[: len(got) // 2]]
        for d in again:
            conn.ack(d.tag)
        for _ in range(100):
            conn.poll(0.02)
            if len(confirms) >= len(bodies):
                break
        assert sorted(confirms) == [(i, True) for i in range(len(bodies))]
        assert conn.is_open
        conn.delete_queue(queue)
    finally:
        conn.close()


@transports
def test_one_by_one_publishes_of_mixed_sizes_over_tls(tls_settings: Settings, transport: str
                                                      ) -> None:
    conn = connect(transport, tls_settings, "tls-writes-1", confirms=True)
    try:
        queue = f"tlsw-{uuid.uuid4().hex[:8]}"
        conn.declare(Topology(queues=[QueueSpec(queue, durable=True)]))
        conn.consume(queue, prefetch=500)
        _squeezed(conn)
        bodies = _bodies(_MIXED)
        confirms: list[bool] = []
        for body in bodies:
            conn.publish(queue, body, mandatory=True, on_confirm=confirms.append)
        got = drain(conn, len(bodies), rounds=600)
        assert [d.body for d in got] == bodies
        for d in got:
            conn.ack(d.tag)
        for _ in range(100):
            conn.poll(0.02)
            if len(confirms) >= len(bodies):
                break
        assert confirms == [True] * len(bodies)
        conn.delete_queue(queue)
    finally:
        conn.close()
