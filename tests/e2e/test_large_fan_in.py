"""A DAG fan-in whose partial results are too large for one etcd transaction.

Each upstream of a join returns more than a commit may carry (MAX_TXN_BYTES, 1 MiB: etcd
refuses a request over 1.5 MiB), so the record of its partial cannot be written. The call
must fail at once, with an error naming the limit, its outcome stored once and its messages
acked: not crash the message cycle on every redelivery until the message is dead-lettered,
the caller learning of it late and wrongly.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import droplet
from tests.conftest import Cluster, client_fixture, cluster_fixture
from tests.e2e.dashboard_support import dead_letter_count

pytestmark = pytest.mark.e2e

fan_in_cluster = cluster_fixture(workers=3, status_interval_s=0.5)
fclient = client_fixture("fan_in_cluster")

PART_BYTES = 2 * 1024 * 1024 + 1


@pytest.mark.timeout(90)
def test_a_fan_in_of_partials_too_large_for_a_commit_fails_at_once_naming_the_limit(
    fclient: Any, fan_in_cluster: Cluster, unique: str
) -> None:
    left, right, join = unique + "-left", unique + "-right", unique + "-join"
    fclient.register(lambda lib, n: b"L" * n, left)
    fclient.register(lambda lib, n: b"R" * n, right)
    fclient.register(lambda lib, a, b: len(a) + len(b), join)
    dag = unique + "-dag"
    assert fclient.register_dag(dag, [left, right, join], [(left, join), (right, join)]) == (
        True, None)
    try:
        dead_before = dead_letter_count(fan_in_cluster.settings)
        started = time.monotonic()
        with pytest.raises(droplet.InvalidRequestError, match="MiB") as info:
            fclient.call_dag(dag, {left: [PART_BYTES], right: [PART_BYTES]}).get(timeout=60)
        elapsed = time.monotonic() - started
        assert "too large" in str(info.value), info.value
        assert elapsed < 15, f"the call failed only after {elapsed:.1f}s (a retry loop)"
        # Acked, not dead-lettered after crashing on every redelivery.
        time.sleep(1)
        assert dead_letter_count(fan_in_cluster.settings) == dead_before
        # The same DAG with partials that fit still joins.
        assert fclient.call_dag(dag, {left: [1000], right: [24]}).get(timeout=20) == 1024
    finally:
        fclient.delete_dag(dag)
