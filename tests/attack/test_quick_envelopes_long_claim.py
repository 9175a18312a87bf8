"""A call that goes long (long_call_s) in an envelope of 64 calls of a quick function with
30 KB arguments: the worker holds the delivery as a claim in etcd (worker/claims.py), and 64
such calls make a body over etcd's 1.5 MiB request limit (16 of them did not): the claim was
refused ("etcd put failed: INVALID_ARGUMENT: etcdserver: request is too large", logged as a
lost broker connection), and the delivery stayed unacked, open to RabbitMQ's consumer timeout,
for the whole long call. Envelopes of 64 now carry at most 1 MiB."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.conftest import Cluster, client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

long_cluster = cluster_fixture(workers=1, worker_lease_ttl_s=2, status_interval_s=0.3,
                               long_call_s=1.0)
lclient = client_fixture("long_cluster")


def _step(lib: Any, blob: bytes, sleep_s: float) -> int:
    if sleep_s:
        import time as t

        t.sleep(sleep_s)
    return len(blob)


def test_a_long_call_in_an_envelope_of_64_with_30_kb_arguments(
        long_cluster: Cluster, lclient: Any, unique: str) -> None:
    fn = lclient.register(_step, unique)
    blob = os.urandom(30_000)
    deadline = time.monotonic() + 20
    while unique not in lclient.router.known_quick():
        assert time.monotonic() < deadline, "never known quick"
        [f.get(timeout=10) for f in [fn(blob, 0.0) for _ in range(50)]]
        time.sleep(0.2)
    futures = [fn(blob, 2.5 if i == 300 else 0.0) for i in range(640)]
    assert [f.get(timeout=40) for f in futures] == [30_000] * 640
    assert long_cluster.log_dir is not None
    logs = "".join(p.read_text(errors="replace") for p in long_cluster.log_dir.glob("*.log"))
    assert "a long call: 1 deliveries acked and held as claims" in logs, "it went long"
    assert "too large" not in logs


def test_envelopes_of_64_carry_at_most_1_mib() -> None:
    """The routing side, deterministic: 64 calls of a quick function with 30 KB arguments
    (1.9 MiB) do not go in one message."""
    from droplet.proto import pb
    from droplet.store import serializer
    from droplet.store.memory import MemoryKV
    from tests.unit.test_call_routing import KEYS, NAMES, router

    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), pb.WorkerStatus(id="w1", quick_functions=["f"]).SerializeToString())
    sizes: list[int] = []
    route, sent = router(kv, in_flight=1000)
    original = route._send

    def measured(queue: str, body: bytes, ids: list[str], priority: int = 0,
                 persistent: bool = True) -> None:
        sizes.append(len(body))
        original(queue, body, ids, priority=priority, persistent=persistent)

    route._send = measured
    batch = []
    for i in range(128):
        call = pb.FunctionCall(name="f", call_id=f"c{i}", response_key=f"c{i}")
        serializer.dump(os.urandom(30_000), call.arguments.values.add())
        batch.append(call)
    assert route.send(batch) == []
    assert sum(n for _, n in sent) == 128 and {q for q, _ in sent} == {NAMES.work}
    assert max(sizes) <= 1.25 * 1024 * 1024, f"an envelope of {max(sizes)} bytes"
