"""An idle watch thread wakes once a second, not ten times (store/etcd_watch.py)."""

from __future__ import annotations

import grpc

from droplet.store.etcd_watch import STREAM_WAKE_S, PrefixWatch


def test_a_watch_raises_grpcs_stream_wake_up_interval() -> None:
    grpc._common.MAXIMUM_WAIT_TIMEOUT = 0.1  # grpc's own default
    watch = PrefixWatch(client=None, endpoints=1, prefix="/x/", start_revision=0,
                        on_events=lambda events: None, on_error=lambda exc: None)
    assert not watch.is_alive()
    # This grpc still has the setting (if a release drops it, the idle cost comes back and
    # this test says so).
    assert grpc._common.MAXIMUM_WAIT_TIMEOUT >= STREAM_WAKE_S
