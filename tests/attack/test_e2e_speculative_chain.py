"""Attack (end to end): chains whose first DAG ends in a speculative step, with every copy
finishing at once (3 copies, all valid at the same moment). Each copy that finds itself the
winner would make the next DAG call; the next DAG (`count`, pinned on one worker, so its runs
are sequential) appends the call's tag to a stored list each time it runs, so the list holds
each tag once exactly when each chain made its next call once. Held: no fix was needed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

chain_cluster = cluster_fixture(workers=4, worker_lease_ttl_s=3, status_interval_s=0.5)
client = client_fixture("chain_cluster")


def test_a_speculative_last_step_makes_the_next_dag_call_once(client: Any, unique: str) -> None:
    u = unique
    runs_key = u + "-runs"

    def together(lib: Any, tag: str, at: float) -> str:
        time.sleep(max(0.0, at - time.time()))  # every copy returns at the same moment
        return tag

    def count(lib: Any, tag: str) -> str:
        lib.put(runs_key, [*(lib.get(runs_key) or []), tag])
        return tag

    client.register(together, u + "-spec")
    client.register(count, u + "-count")
    assert client.register_dag(u + "-first", [(u + "-spec", [None], 3)], []) == (True, None)
    assert client.register_dag(u + "-next", [u + "-count"], []) == (True, None)
    try:
        tags = [f"t{i}" for i in range(12)]
        at = time.time() + 2.0
        futures = [client.call_dag(u + "-first", {u + "-spec": [tag, at]},
                                   continuation=u + "-next") for tag in tags]
        assert [f.get(timeout=60) for f in futures] == tags
        time.sleep(1.0)  # a duplicate next call would have run by now
        assert sorted(client.get_object(runs_key)) == sorted(tags)
    finally:
        client.delete_dag(u + "-first")
        client.delete_dag(u + "-next")
