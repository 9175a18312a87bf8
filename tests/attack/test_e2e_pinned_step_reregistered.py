"""Attack on 'no schedule notice to pinned workers' (scheduler/dags.py call_dag): a DAG step's
function re-registered with a new body after the DAG was created. Its pinned worker got no
notice (which used to load the function ahead of the trigger): the next trigger must run the
new body all the same, for every call after the re-registration has been seen."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import client_fixture, cluster_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

rereg_cluster = cluster_fixture(workers=2, status_interval_s=0.5)
rclient = client_fixture("rereg_cluster")


def test_a_pinned_step_runs_its_new_body_after_a_re_registration(rclient: Any, unique: str
                                                                 ) -> None:
    a, b = unique + "-a", unique + "-b"
    rclient.register(lambda lib, x: x + 1, a)
    rclient.register(lambda lib, x: ("old", x), b)
    dag = unique + "-dag"
    assert rclient.register_dag(dag, [a, b], [(a, b)]) == (True, None)
    try:
        for i in range(3):
            assert rclient.call_dag(dag, {a: [i]}, direct_response=True, timeout=20) == (
                "old", i + 1)
        rclient.register(lambda lib, x: ("new", x), b)
        deadline = time.monotonic() + 5
        got = None
        while time.monotonic() < deadline:
            got = rclient.call_dag(dag, {a: [10]}, direct_response=True, timeout=20)
            if got == ("new", 11):
                break
            time.sleep(0.1)
        assert got == ("new", 11), "the pinned worker kept the old body"
        for i in range(5):  # and keeps the new one
            assert rclient.call_dag(dag, {a: [i]}, direct_response=True, timeout=20) == (
                "new", i + 1)
    finally:
        rclient.delete_dag(dag)
