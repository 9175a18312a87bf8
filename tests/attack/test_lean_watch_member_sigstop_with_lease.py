"""Attack (real 3-member etcd cluster): SIGSTOP the member a worker-like process uses while it
keeps a short lease alive and mirrors a prefix (its watch on the same member).

The lease refresh (a third of the 3 s ttl per attempt) times out first and moves the client to
a live member. When the watch then failed (keepalive pings, ~10 s) it took the member in use
for failed: the live one the client had just moved to. The library then picks the first
member not marked failed, often the stopped one again (its mark lasts half a second), so the
mirror's re-read and new watch went back to the hung member and waited there: writes showed
up in the mirror only after 20-26 s (over grpcio too), not ~10 s. A watch now marks its own
member. Run: .venv/bin/python -m pytest -q tests/attack/test_lean_watch_member_sigstop_with_lease.py
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from droplet.store.mirror import PrefixMirror

pytestmark = [
    pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]

# Pings after 6 s quiet, 4 s to answer; then the mirror re-reads (0.5 s) from a live member.
_SEEN_WITHIN_S = 15.0


@pytest.mark.parametrize("transport", ["lean", "grpc"])
def test_a_mirror_moves_off_a_stopped_member_its_lease_refresh_left_first(
    etcd_members: list[LocalEtcd], transport: str,
) -> None:
    endpoints = tuple(m.endpoint for m in etcd_members)
    kv = EtcdKV(Settings(etcd_endpoints=endpoints, etcd_transport=transport))
    stop = threading.Event()
    mirror = None
    writer = None
    try:
        lease = kv.grant_lease(3)

        def refresh() -> None:
            while not stop.wait(1):
                with contextlib.suppress(Exception):  # it may lapse meanwhile: not the point
                    lease.refresh()

        threading.Thread(target=refresh, daemon=True).start()
        mirror = PrefixMirror(kv, "/attack/").start()
        seen: list[float] = []
        mirror.on_change(lambda name, value: seen.append(time.monotonic()))
        time.sleep(1)
        victim = next(m for m in etcd_members if m.endpoint == kv.endpoint_in_use)
        assert victim.pid is not None
        writer = EtcdKV(Settings(etcd_endpoints=tuple(
            e for e in endpoints if e != victim.endpoint)))
        os.kill(victim.pid, signal.SIGSTOP)
        started = time.monotonic()
        written = 0
        while not seen and time.monotonic() - started < 40:
            writer.put(f"/attack/k{written}", b"1")
            written += 1
            time.sleep(0.5)
        assert seen, "the mirror never saw a write again"
        took = seen[0] - started
        assert took < _SEEN_WITHIN_S, f"the mirror saw writes again only after {took:.1f} s"
    finally:
        stop.set()
        if mirror is not None:
            mirror.close()
        if writer is not None:
            writer.close()
        kv.close()
