"""A long call's deliveries held as claims in etcd (worker/claims.py): one too large for an
etcd request, and etcd away at the moment the keeper holds them."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from droplet.broker.interface import Delivery
from droplet.broker_config.names import QueueNames
from droplet.errors import StoreError
from droplet.store.commits import MAX_TXN_BYTES
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from droplet.worker.claims import LongCallClaims
from droplet.worker.keeper import ConnectionKeeper

pytestmark = pytest.mark.timeout(30)


class Conn:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.pumps = 0

    def ack(self, tag: int) -> None:
        self.acked.append(tag)

    def pump(self) -> None:
        self.pumps += 1


def test_a_delivery_too_large_for_etcd_stays_unacked_and_the_rest_are_held(
        caplog: pytest.LogCaptureFixture) -> None:
    """etcd refuses a request over ~1.5 MiB ("request is too large"): that refusal used to
    leave the hold half done and, raised into the keeper, cost the worker its broker
    connection in the middle of the long call."""
    kv, keys = MemoryKV(), StoreKeys("/t")
    claims = LongCallClaims(kv, keys, QueueNames("t"), "w1", "inc", lambda: None)
    small = Delivery("t.work", b"x" * 1000, tag=1)
    large = Delivery("t.work", b"y" * (MAX_TXN_BYTES + 1), tag=2)
    after = Delivery("t.work", b"z" * 1000, tag=3)
    conn = Conn()
    with caplog.at_level(logging.WARNING, logger="droplet.worker.claims"):
        assert claims.hold(conn, [small, large, after]) == 2  # type: ignore[arg-type]
    assert conn.acked == [1, 3], "the large one must not be acked: nothing holds it"
    assert small.claim and after.claim and not large.claim
    held, _ = kv.get_prefix(keys.claims)
    assert sorted(held) == sorted([small.claim, after.claim])
    assert any("too large to hold as a claim" in r.getMessage() for r in caplog.records)


def test_etcd_away_when_a_call_goes_long_is_tried_again_and_the_connection_kept() -> None:
    conn = Conn()
    attempts: list[float] = []

    def go_long(_conn: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise StoreError("etcd is away")

    keeper = ConnectionKeeper(grace_s=0.05, interval_s=0.05, long_call_s=0.1,
                              on_long_call=go_long)
    with keeper.attached(conn):  # type: ignore[arg-type]
        keeper.start()
        try:
            with keeper.running():
                deadline = time.monotonic() + 5
                while len(attempts) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                pumps = conn.pumps
                deadline = time.monotonic() + 5  # (a pump every 0.05 s; a loaded host: later)
                while conn.pumps == pumps and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert keeper._conn is conn, "the connection was given up for etcd's failure"
                assert conn.pumps > pumps, "the connection is no longer kept alive"
        finally:
            keeper.stop()
    assert len(attempts) == 2, f"{len(attempts)} attempts to hold the long call's deliveries"
