"""Attack (end to end): a fan-in whose slower branch takes longer than schedule_ttl_s.

The partial of the quick branch is stored under joins/ with a lease of schedule_ttl_s
(store/commits.py:151-153, worker/dags.py:68-71). When the slow branch's trigger arrives
after that lease ran out, the join finds no partial, stores the late one, and waits for a
trigger that already came: the step never runs, the call never completes and never fails.
Long steps are otherwise supported (long_call_s defaults to 600 s, twice schedule_ttl_s).

README "Nothing hangs": every failure reaches the caller as an error;
"DAG calls survive ...: a fan-in counts each trigger once".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_join_ttl.py
"""

from __future__ import annotations

import time

import pytest

import droplet
from tests.conftest import Cluster, cluster_fixture

pytestmark = [pytest.mark.e2e]

# schedule_ttl_s scaled down from 300 s to 2 s, so that the slow branch takes 4 s, not 6 min.
ttl_cluster = cluster_fixture(workers=3, schedule_ttl_s=2, status_interval_s=0.5,
                              worker_lease_ttl_s=5)


def test_a_fan_in_whose_slow_branch_outlives_schedule_ttl_completes_or_fails(
    ttl_cluster: Cluster, unique: str
) -> None:
    with droplet.connect(settings=ttl_cluster.settings) as c:
        c.register(lambda lib, x: x + 1, unique + "-a")

        def slow(lib, x):  # type: ignore[no-untyped-def]
            import time as t

            t.sleep(4)
            return x * 10

        c.register(slow, unique + "-b")
        c.register(lambda lib, x, y: x + y, unique + "-c")
        a, b, j = unique + "-a", unique + "-b", unique + "-c"
        assert c.register_dag(unique, [a, b, j], [(a, j), (b, j)]) == (True, None)
        started = time.monotonic()
        future = c.call_dag(unique, {a: [1], b: [2]})
        try:
            result = future.get(timeout=25)
        except droplet.DropletTimeoutError:
            pytest.fail(f"no answer, not even an error, after {time.monotonic() - started:.0f}s")
        except droplet.DropletError:
            return  # a clear error is acceptable
        assert result == 22
