"""Attack: a lean watch (store/http2_stream.py) whose peer sends a header block that does not
decode (a broken member, a proxy in between).

The unary path (store/http2.py) reads that as a lost connection (UNAVAILABLE); the watch let
hpack's own exception out: the watch's owner heard of the gap, but not as a gRPC failure, so
the watch (store/etcd_watch.py) did not take the member for failed, and its owner's next
watch went back to the same member.
Run: .venv/bin/python -m pytest -q tests/attack/test_lean_watch_hostile_peer.py
"""

from __future__ import annotations

import time

import grpc
import pytest

from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from droplet.store.etcd_lean import LeanKV, RpcFailure
from droplet.store.http2 import DATA, END_HEADERS, HEADERS, frame
from tests.unit.test_etcd_http2 import _Server, _serving
from tests.unit.test_etcd_http2_stream import _CREATE

pytestmark = [pytest.mark.fault, pytest.mark.timeout(30)]


def _garbled_headers(server: _Server) -> None:
    server.greet()
    while (parsed := server.frame())[0] != DATA:  # the watch's headers, then its request
        pass
    stream = parsed[2]
    server.sock.sendall(frame(HEADERS, END_HEADERS, stream, b"\xff\xff\xff\xff\xff"))
    time.sleep(0.3)


def test_an_undecodable_header_block_is_a_lost_connection() -> None:
    with _serving(_garbled_headers) as (host, port):
        watch = LeanKV(host, port).open_watch(_CREATE)
        with pytest.raises(RpcFailure) as caught:
            for _ in watch:
                pass
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_watch_on_a_member_sending_garbled_headers_moves_to_another() -> None:
    with _serving(_garbled_headers) as (host, port):
        spare = f"{host}:1"  # another member (never reached here)
        kv = EtcdKV(Settings(etcd_endpoints=(f"{host}:{port}", spare)))
        errors: list[Exception] = []
        try:
            if kv.endpoint_in_use == spare:  # the library picks a member at random
                kv.fail_over()
                time.sleep(0.6)  # the spare's mark (0.5 s) has passed: it can be moved to
            assert kv.endpoint_in_use == f"{host}:{port}"
            cancel = kv.watch_prefix("/p/", lambda events: None, errors.append)
            deadline = time.monotonic() + 5
            while not errors and time.monotonic() < deadline:
                time.sleep(0.02)
            cancel()
            assert errors, "the watch's owner heard of the gap"
            assert "UNAVAILABLE" in str(errors[0])
            assert kv.endpoint_in_use == spare, "the member was taken for failed"
        finally:
            kv.close()
