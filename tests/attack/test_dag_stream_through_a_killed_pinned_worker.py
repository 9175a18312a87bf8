"""Attack (real scheduler and workers, real RabbitMQ and etcd): clients stream calls of a DAG
straight to its source's pinned worker (client/dagroutes.py) while that worker is killed
(SIGKILL), and the pin moves to another worker (healing), twice.

Checked: every call is answered once, with the right result, within its timeout: none is lost
in the dead worker's queue (the reaper drains it, and deletes it only after a second drain, for
publishers whose view lags), none hangs. The clients' views are read again by a thread of their
own since df154ac, and may lag by a second or two.
Run: .venv/bin/python -m pytest -q tests/attack/test_dag_stream_through_a_killed_pinned_worker.py
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

import droplet
from droplet.cli.status import collect
from droplet.errors import DropletError
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

cluster = cluster_fixture(workers=5, scope="function", worker_lease_ttl_s=2,
                          status_interval_s=0.5)


def _holder(cluster: Cluster, pin: str) -> dict[str, Any] | None:
    return next((w for w in collect(cluster.settings)["workers"] if w["pinned"] == pin), None)


def test_a_stream_of_dag_calls_survives_its_pinned_worker_killed(cluster: Cluster,
                                                                 unique: str) -> None:
    clients = [droplet.connect(settings=cluster.settings) for _ in range(6)]
    try:
        setup = clients[0]
        setup.register(lambda lib, x: x + 1, unique + "-incr")
        setup.register(lambda lib, x: x * x, unique + "-square")
        dag = unique + "-dag"
        assert setup.register_dag(dag, [unique + "-incr", unique + "-square"],
                                  [(unique + "-incr", unique + "-square")]) == (True, None)
        pin = f"{dag}/{unique}-incr"
        stop = threading.Event()
        bad: list[str] = []
        counts = {"ok": 0, "refused": 0}
        slowest = [0.0]

        def stream(client: Any, offset: int) -> None:
            x = offset
            while not stop.is_set():
                x += 3
                started = time.monotonic()
                try:
                    got = client.call_dag(dag, {unique + "-incr": [x]}, direct_response=True,
                                          timeout=20)
                except DropletError as exc:  # NO_RESOURCES while the pin moves, say
                    counts["refused"] += 1
                    bad.append(f"{x}: {exc!r} after {time.monotonic() - started:.1f}s")
                    continue
                except Exception as exc:
                    bad.append(f"{x}: {exc!r} after {time.monotonic() - started:.1f}s")
                    continue
                slowest[0] = max(slowest[0], time.monotonic() - started)
                if got != (x + 1) ** 2:
                    bad.append(f"{x}: {got}")
                counts["ok"] += 1

        threads = [threading.Thread(target=stream, args=(c, i)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        try:
            for _kill in range(2):
                time.sleep(2)
                holder = _holder(cluster, pin)
                assert holder is not None
                os.kill(holder["pid"], signal.SIGKILL)
                deadline = time.monotonic() + 40
                while (moved := _holder(cluster, pin)) is None or moved["id"] == holder["id"]:
                    assert time.monotonic() < deadline, "the pin never moved"
                    time.sleep(0.2)
            time.sleep(3)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not any(t.is_alive() for t in threads), "a call hung"
        print("counts", counts, f"slowest {slowest[0]:.1f} s", "bad", len(bad), bad[:10])
        assert counts["ok"] > 100
        assert not bad, bad[:10]
    finally:
        for c in clients:
            c.close()
