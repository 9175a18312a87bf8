"""Attack (end to end): commits within etcd's operation limit but over its request-size limit.

The committer bounds a transaction by operation count only (store/commits.py:114 and 155,
etcd_max_txn_ops), never by bytes; etcd refuses any request over --max-request-bytes (1.5 MiB
by default, which `droplet up`'s embedded etcd and deploy/README keep) with "request is too
large". That error leaves as a StoreError, which the cycle reads as "etcd is unavailable"
(cycle.py:140-147): the delivery goes back, the worker sleeps, the call runs again, and after
dead_letter_max_redeliveries the message is dead-lettered as poison.

A MULTI call writing 30 values of 60 KB (heads up to 64 KiB are stored inline) runs again and
again, and its poison refusal then crashes the worker (see test_poison_dag_source.py): the
caller never gets an answer. (Batched outcomes of quick calls, commits.py:81-121, have the
same unbounded size; a burst of 64 calls returning 60 KB each did not reach the limit within
the cycle's 2 ms linger here.)

README "MULTI ... A commit larger than etcd allows fails whole (INVALID_REQUEST)"; "At least
once, with one outcome per call"; "The outcomes of quick calls in one delivery are committed
together".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_request_bytes.py
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import droplet
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e]

bytes_cluster = cluster_fixture(workers=1, status_interval_s=0.3, worker_lease_ttl_s=5)


def test_a_multi_commit_over_etcds_request_size_fails_once_and_clearly(
    bytes_cluster: Cluster, unique: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    with droplet.connect(settings=bytes_cluster.settings) as c:

        def writer(lib, path, prefix):  # type: ignore[no-untyped-def]
            with open(path, "a") as fh:
                fh.write(f"run {__import__('time').time():.3f} {__import__('os').getpid()}\n")
            for i in range(30):
                lib.put(f"{prefix}-{i}", "x" * 60_000)
            return "ok"

        c.register(writer, unique + "-w")
        assert c.register_dag(unique, [unique + "-w"], []) == (True, None)
        started = time.monotonic()
        with pytest.raises(droplet.DropletError) as failure:
            c.call_dag(unique, {unique + "-w": [str(runs), unique]},
                       consistency=droplet.MULTI).get(timeout=30)
        took = time.monotonic() - started
        count = runs.read_text().count("run")
        assert failure.value.code == droplet.INVALID_REQUEST, (
            f"ran {count} times over {took:.1f}s, then: {failure.value!r}")
        assert count == 1 and took < 5, (
            f"ran {count} times over {took:.1f}s, then: {failure.value}")
