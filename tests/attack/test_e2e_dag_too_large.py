"""Attack (end to end): register_dag with a speculative function whose invalid_results hold
3 MB. The DAG (invalid_results included) is stored in etcd, which refuses a request that
large; the scheduler took that for etcd being unavailable and put the request back, taking it
again at once, forever: that register_dag timed out after 30 s, and so did every admin
request after it (another register_dag), the scheduler being stuck on that one message.

Now the client refuses such a DAG before sending (ValueTooLargeError), and a scheduler given
one anyway (a client that skips the check) answers INVALID_REQUEST and goes on serving.
README "Speculative functions".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_dag_too_large.py
"""

from __future__ import annotations

from typing import Any

import pytest

import droplet
from droplet.proto import pb
from droplet.store import serializer
from tests.conftest import client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

big_cluster = cluster_fixture(workers=2, worker_lease_ttl_s=3, status_interval_s=0.5)
bclient = client_fixture("big_cluster")


def test_a_dag_too_large_to_store_is_refused_and_the_scheduler_goes_on(bclient: Any,
                                                                        unique: str) -> None:
    u = unique
    bclient.register(lambda lib, x: x + 1, u + "-incr")
    huge = b"x" * 3_000_000
    with pytest.raises(droplet.ValueTooLargeError, match="invalid_results"):
        bclient.register_dag(u + "-huge", [(u + "-incr", [huge])], [])
    # Sent anyway, past the client's check: the scheduler answers instead of looping.
    dag = pb.Dag(name=u + "-raw", functions=[u + "-incr"])
    spec = dag.speculative.add(function=u + "-incr", copies=2)
    serializer.dump(huge, spec.invalid_results.add())
    assert bclient.admin.result(pb.Message(dag=dag)) == (False, pb.INVALID_REQUEST)
    assert bclient.register_dag(u + "-ok", [(u + "-incr", [None])], []) == (True, None)
    assert bclient.call_dag(u + "-ok", {u + "-incr": [1]}, direct_response=True,
                            timeout=20) == 2
    bclient.delete_dag(u + "-ok")
