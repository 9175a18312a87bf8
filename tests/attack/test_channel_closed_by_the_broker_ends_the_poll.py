"""broker/amqp.py poll: a channel the broker closes (a channel error, e.g. a publish it refuses)
ends the poll's wait at once, as pika's does (its poll returns and is_open turns False).

Since client requests go on the fast channel without confirms (client/pump.py _publish,
needs_confirm=False), a broker-side error on that channel drops every request published after
it until the client reconnects and sends them again; the lean transport noticed the closed
channel only when its poll's time limit ran out (the pump polls for up to 1 s, a scheduler
0.5 s), so every call in flight waited that long for nothing."""

from __future__ import annotations

import time
import uuid

import pytest

from droplet.broker import amqp_frames as fr
from droplet.errors import BrokerError
from droplet.settings import Settings
from tests.broker_transports import connect, transports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _refused_publish(conn: object, transport: str) -> None:
    """A publish to a missing exchange on the fast channel: the broker closes it (404)."""
    if transport == "pika":
        conn._fast._impl.basic_publish("droplet-no-such-exchange", "q", b"x")  # type: ignore
        return
    ch, wire = conn._fast, conn._wire  # type: ignore[attr-defined]
    wire.send(fr.method_frame(ch, fr.PUBLISH, b"\0\0" + fr.shortstr("droplet-no-such-exchange")
                              + fr.shortstr("q") + b"\0"))
    wire.send(b"".join(fr.content_frames(ch, b"\x01", fr.P_DELIVERY_MODE, b"x",
                                         wire.frame_max)))


@transports
def test_a_channel_the_broker_closes_ends_the_poll(settings: Settings, transport: str) -> None:
    settings = Settings(broker_url=settings.broker_url, etcd_endpoints=("127.0.0.1:1",),
                        namespace=f"t{uuid.uuid4().hex[:8]}")
    conn = connect(transport, settings, "closed-channel-poll", confirms=True)
    try:
        conn.consume_replies()
        _refused_publish(conn, transport)
        started = time.monotonic()
        try:
            while conn.is_open and time.monotonic() - started < 30:
                conn.poll(15.0)
        except BrokerError:
            pass
        took = time.monotonic() - started
        assert not conn.is_open
        # Not noticed, the poll runs its 15 s; noticed, well under a second (3 s: load).
        assert took < 3.0, f"the closed channel was noticed after {took:.2f}s"
    finally:
        conn.close()
