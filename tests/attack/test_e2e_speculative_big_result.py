"""Attack (end to end): a speculative DAG step whose result is 3 MB.

Plain DAG steps pass such a result on in their triggers (and a DAG's outcome is stored in
chunks). But the race of a speculative step's copies records the winner's result (and each
loser's) in etcd, whole, in one transaction: etcd refuses a request that large, the worker
took that for etcd being unavailable and put the trigger back, ran the copy again, and so on
forever; the call was never answered.

Now a race record holds a losing copy's error only, and the winner's result only when it is
small; a winner redelivered after a win recorded without its result runs again and sends its
result on (as a redelivered ordinary step does). README "Speculative functions".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_speculative_big_result.py
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

big_cluster = cluster_fixture(workers=3, worker_lease_ttl_s=3, status_interval_s=0.5)
bclient = client_fixture("big_cluster")

SIZE = 3_000_000


def test_a_speculative_step_with_a_result_too_large_for_one_etcd_request(bclient: Any,
                                                                         unique: str) -> None:
    u = unique
    bclient.register(lambda lib, n: b"x" * n, u + "-big")
    bclient.register(lambda lib, blob: len(blob), u + "-length")
    assert bclient.register_dag(u + "-last", [(u + "-big", [None], 2)], []) == (True, None)
    assert bclient.register_dag(u + "-first", [(u + "-big", [b""], 2), u + "-length"],
                                [(u + "-big", u + "-length")]) == (True, None)
    try:
        assert bclient.call_dag(u + "-first", {u + "-big": [SIZE]}, direct_response=True,
                                timeout=60) == SIZE
        assert len(bclient.call_dag(u + "-last", {u + "-big": [SIZE]}).get(timeout=60)) == SIZE
        assert len(bclient.call_dag(u + "-last", {u + "-big": [SIZE]}, direct_response=True,
                                    timeout=60)) == SIZE
    finally:
        bclient.delete_dag(u + "-last")
        bclient.delete_dag(u + "-first")
