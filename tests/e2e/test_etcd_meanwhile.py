"""A transaction's `meanwhile` (KV.txn_previous) runs on the lean path once the request is
sent and before its answer is read: the worker builds a call's answer while etcd writes its
outcome (prepared_answers.py). On grpcio it does not run, and the transaction is the same."""

from __future__ import annotations

from typing import Any

import pytest

from droplet.settings import Settings
from droplet.store import http2
from droplet.store.etcd import EtcdKV
from droplet.store.kv import Put, VersionIs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.mark.parametrize("transport", ["lean", "grpc"])
def test_meanwhile_runs_between_the_send_and_the_answer(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    steps: list[str] = []
    real_send, real_read = http2.Http2Connection._send_request, http2.Http2Connection._read_answer

    def send(self: http2.Http2Connection, *args: Any) -> Any:
        steps.append("sent")
        return real_send(self, *args)

    def read(self: http2.Http2Connection, *args: Any) -> Any:
        steps.append("answer read")
        return real_read(self, *args)

    monkeypatch.setattr(http2.Http2Connection, "_send_request", send)
    monkeypatch.setattr(http2.Http2Connection, "_read_answer", read)
    kv = EtcdKV(settings.with_(etcd_transport=transport))
    key = f"{settings.etcd_prefix}once"
    try:
        kv.put(f"{settings.etcd_prefix}warm", b"w")  # connected, its first exchange done
        steps.clear()
        ok, _, _ = kv.txn_previous([VersionIs(key, 0)], [Put(key, b"1")],
                                   meanwhile=lambda: steps.append("meanwhile"))
        seen = list(steps)
        assert ok and kv.get(key) == b"1"
        if transport == "lean":
            assert seen == ["sent", "meanwhile", "answer read"]
        else:
            assert "meanwhile" not in seen
    finally:
        kv.delete(settings.etcd_prefix, prefix=True)
        kv.close()
