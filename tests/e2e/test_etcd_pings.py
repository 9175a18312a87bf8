"""etcd's gRPC server (grpc-go) pings a client each time it reads data while no ping of its own
is out, to size its flow-control windows. The lean client answers a ping with its next request,
after that request's body: etcd then reads the request while its ping is still out, and does
not ping again for it. Answered before the body, every request drew a ping (and the window
update sent with it): a wake-up of the worker and two frames more per durable call."""

from __future__ import annotations

from typing import Any

import pytest

from droplet.settings import Settings
from droplet.store import http2
from droplet.store.etcd import EtcdKV

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_etcd_pings_at_most_every_other_request(settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[bytes] = []
    real_handle = http2.Http2Connection._handle

    def handle(self: http2.Http2Connection, parsed: tuple[int, int, int, bytes], stream: int,
               answer: Any) -> None:
        kind, flags, _, payload = parsed
        if kind == http2.PING and not flags & http2.ACK:
            pings.append(payload)
        real_handle(self, parsed, stream, answer)

    monkeypatch.setattr(http2.Http2Connection, "_handle", handle)
    kv = EtcdKV(settings.with_(etcd_transport="lean"))
    try:
        for i in range(5):  # the connection is made, and etcd's first pings are done with
            kv.put(f"{settings.etcd_prefix}warm", str(i).encode())
        pings.clear()
        requests = 60
        for i in range(requests):
            kv.put(f"{settings.etcd_prefix}k{i}", b"v")
        assert pings, "etcd sent no ping at all: the premise of this test no longer holds"
        assert len(pings) <= requests // 2 + 2, (len(pings), requests)  # it was every one
    finally:
        kv.delete(settings.etcd_prefix, prefix=True)
        kv.close()
