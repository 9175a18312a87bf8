"""Attack on the large fan-in fix (cycle.py `_refuse_too_large`) beyond its own test: partials
too large for a commit with direct_response (no stored outcome: the answer goes straight to the
caller), in a MULTI call (the outcome written once), a final join whose result is too large to
record with direct_response, and the same DAG working again afterwards. Each must end at once
with one clear answer, not a redelivery loop or a dead letter."""

from __future__ import annotations

import time
from typing import Any

import pytest

import droplet
from tests.conftest import Cluster, client_fixture, cluster_fixture
from tests.e2e.dashboard_support import dead_letter_count

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

variant_cluster = cluster_fixture(workers=3, status_interval_s=0.5)
vclient = client_fixture("variant_cluster")

BIG = 2 * 1024 * 1024 + 1


def _fan_in(client: Any, unique: str, join_fn: Any) -> tuple[str, str, str]:
    left, right, join = unique + "-l", unique + "-r", unique + "-j"
    client.register(lambda lib, n: b"L" * n, left)
    client.register(lambda lib, n: b"R" * n, right)
    client.register(join_fn, join)
    dag = unique + "-dag"
    assert client.register_dag(dag, [left, right, join], [(left, join), (right, join)]) == (
        True, None)
    return dag, left, right


def test_too_large_partials_direct_and_multi(vclient: Any, variant_cluster: Cluster,
                                             unique: str) -> None:
    dag, left, right = _fan_in(vclient, unique, lambda lib, a, b: len(a) + len(b))
    try:
        dead = dead_letter_count(variant_cluster.settings)
        started = time.monotonic()
        with pytest.raises(droplet.InvalidRequestError, match="too large"):
            vclient.call_dag(dag, {left: [BIG], right: [BIG]}, direct_response=True,
                             timeout=30)
        assert time.monotonic() - started < 15
        with pytest.raises(droplet.InvalidRequestError, match="too large"):
            vclient.call_dag(dag, {left: [BIG], right: [BIG]},
                             consistency=droplet.MULTI).get(timeout=30)
        assert vclient.call_dag(dag, {left: [10], right: [14]}, direct_response=True,
                                timeout=20) == 24
        assert vclient.call_dag(dag, {left: [10], right: [4]},
                                consistency=droplet.MULTI).get(timeout=20) == 14
        time.sleep(1)
        assert dead_letter_count(variant_cluster.settings) == dead
    finally:
        vclient.delete_dag(dag)


def test_a_final_join_result_too_large_to_record_direct(vclient: Any, variant_cluster: Cluster,
                                                        unique: str) -> None:
    dag, left, right = _fan_in(vclient, unique, lambda lib, a, b: a + b)
    try:
        dead = dead_letter_count(variant_cluster.settings)
        for direct in (True, False):
            started = time.monotonic()
            try:
                if direct:
                    got = vclient.call_dag(dag, {left: [BIG // 2], right: [BIG // 2]},
                                           direct_response=True, timeout=30)
                else:
                    got = vclient.call_dag(dag, {left: [BIG // 2], right: [BIG // 2]}
                                           ).get(timeout=30)
                assert got == b"L" * (BIG // 2) + b"R" * (BIG // 2)
            except droplet.InvalidRequestError as exc:
                assert "too large" in str(exc)
            assert time.monotonic() - started < 15, f"direct={direct}"
        time.sleep(1)
        assert dead_letter_count(variant_cluster.settings) == dead
        assert vclient.call_dag(dag, {left: [1], right: [2]}, direct_response=True,
                                timeout=20) == b"LRR"
    finally:
        vclient.delete_dag(dag)


def test_a_final_join_of_small_partials_with_a_result_too_large_to_record(
        vclient: Any, variant_cluster: Cluster, unique: str) -> None:
    dag, left, right = _fan_in(vclient, unique, lambda lib, a, b: b"J" * (len(a) * BIG))
    try:
        dead = dead_letter_count(variant_cluster.settings)
        seen = []
        for direct in (True, False):
            started = time.monotonic()
            try:
                if direct:
                    got = vclient.call_dag(dag, {left: [1], right: [1]}, direct_response=True,
                                           timeout=30)
                else:
                    got = vclient.call_dag(dag, {left: [1], right: [1]}).get(timeout=30)
                assert got == b"J" * BIG
                seen.append("ok")
            except droplet.InvalidRequestError as exc:
                assert "too large" in str(exc)
                seen.append("too large")
            assert time.monotonic() - started < 15, f"direct={direct}"
        print("final join of a result too large to record:", seen)
        time.sleep(1)
        assert dead_letter_count(variant_cluster.settings) == dead
        assert vclient.call_dag(dag, {left: [0], right: [2]}, direct_response=True,
                                timeout=20) == b""
    finally:
        vclient.delete_dag(dag)
