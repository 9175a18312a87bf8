"""Attack (real 3-member etcd cluster of local processes): SIGSTOP the member a process
watches through. The member still holds the TCP connection but answers nothing, which is
what a hung VM or a one-way partition looks like.

Unary requests time out (5 s) and move to another member, but a watch stream has no deadline:
without gRPC keepalives the watch waited on the stopped member forever, silently, so a
worker's mirrors (functions, DAGs, fleet membership) stopped changing while the rest of the
cluster moved on. With keepalives the watch fails within seconds and its owner watches again
on another member (store/etcd.py _PrefixWatch). README "Configuration": "etcd endpoints
(every member of a cluster: requests and watches move to another when one dies)".
Run: .venv/bin/python -m pytest -q tests/attack/test_etcd_member_sigstop.py
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from droplet.store.kv import WatchEvent

pytestmark = [
    pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]

# Keepalive pings every 6 s, 4 s to answer: a stopped member is noticed within ~10 s.
_NOTICED_WITHIN_S = 20.0


def test_a_watch_on_a_stopped_member_fails_over_instead_of_waiting_forever(
    etcd_members: list[LocalEtcd],
) -> None:
    endpoints = tuple(m.endpoint for m in etcd_members)
    watcher = EtcdKV(Settings(etcd_endpoints=endpoints))
    writer = EtcdKV(Settings(etcd_endpoints=endpoints[1:]))
    events: list[WatchEvent] = []
    errors: list[Exception] = []
    try:
        cancel = watcher.watch_prefix("/attack/", events.extend, errors.append)
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            watcher.put("/attack/before", b"0")  # again until seen: the watch starts meanwhile
            time.sleep(0.2)
        assert events and {e.key for e in events} == {"/attack/before"}
        seen = len(events)
        stopped = next(m for m in etcd_members if m.endpoint == watcher.endpoint_in_use)
        assert stopped.pid is not None
        os.kill(stopped.pid, signal.SIGSTOP)
        started = time.monotonic()
        writer.put("/attack/after", b"1")  # the two other members make a quorum
        while time.monotonic() - started < _NOTICED_WITHIN_S:
            if errors or len(events) > seen:
                break
            time.sleep(0.1)
        waited = time.monotonic() - started
        # Either the write arrives or the watch reports its failure (then its owner watches
        # again elsewhere); it must not stay silent on a member that answers nothing.
        assert errors or len(events) > seen, f"watch silent for {waited:.1f} s on a stopped member"
        cancel()
        # The owner's new watch goes to a live member and sees writes again.
        assert watcher.endpoint_in_use != stopped.endpoint
        again: list[WatchEvent] = []
        cancel = watcher.watch_prefix("/attack/", again.extend, errors.append)
        deadline = time.monotonic() + 15
        while not again and time.monotonic() < deadline:
            writer.put("/attack/later", b"2")  # again until seen: the watch starts meanwhile
            time.sleep(0.5)
        assert {e.key for e in again} == {"/attack/later"}
        assert watcher.endpoint_in_use != stopped.endpoint
        cancel()
    finally:
        watcher.close()
        writer.close()
