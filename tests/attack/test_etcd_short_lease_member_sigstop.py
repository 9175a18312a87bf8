"""Attack (real 3-member etcd cluster of local processes): a short worker lease (3 s, as the
cluster tests use; anything under ~8 s) while the member its keepalives go to hangs
(SIGSTOP: the connection stays open, nothing answers).

A keepalive waited out the library's 5 s request deadline before moving to another member,
longer than the lease itself: the lease expired, the worker's record vanished and the fleet
took a live worker for dead (its calls placed again, the worker re-registered). Now a
keepalive waits at most a third of its lease's ttl before it moves on, so it reaches another
member in time. README "Configuration": worker lease (dead after); deploy guide: "lease
keepalives reach whichever member answers".
Run: .venv/bin/python -m pytest -q tests/attack/test_etcd_short_lease_member_sigstop.py
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV

pytestmark = [
    pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]

_TTL_S = 3


def test_a_short_lease_survives_its_member_hanging(etcd_members: list[LocalEtcd]) -> None:
    endpoints = tuple(m.endpoint for m in etcd_members)
    worker = EtcdKV(Settings(etcd_endpoints=endpoints))
    lease = worker.grant_lease(_TTL_S)
    worker.put("/attack/worker", b"alive", lease=lease.id)
    stopped = next(m for m in etcd_members if m.endpoint == worker.endpoint_in_use)
    observer = EtcdKV(Settings(etcd_endpoints=tuple(e for e in endpoints
                                                    if e != stopped.endpoint)))
    failures: list[str] = []
    done = threading.Event()

    def keep_alive() -> None:  # as store/membership.py does: every ttl / 3
        while not done.wait(_TTL_S / 3):
            try:
                lease.refresh()
            except Exception as exc:
                failures.append(str(exc))

    keeper = threading.Thread(target=keep_alive, daemon=True)
    keeper.start()
    try:
        time.sleep(1.5)
        assert stopped.pid is not None
        os.kill(stopped.pid, signal.SIGSTOP)
        gone_at = None
        deadline = time.monotonic() + 4 * _TTL_S
        while time.monotonic() < deadline and gone_at is None:
            if observer.get("/attack/worker") is None:
                gone_at = time.monotonic()
            time.sleep(0.2)
        assert gone_at is None, f"the worker's record expired (keepalive failures: {failures})"
        assert not failures, failures
    finally:
        done.set()
        keeper.join(10)
        worker.close()
        observer.close()
