"""DAGs end to end: register, call (direct, future, output key), fan-in/out, failures, delete."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import droplet
from tests.conftest import Cluster, client_fixture, cluster_fixture

pytestmark = pytest.mark.e2e


dag_cluster = cluster_fixture(workers=4, worker_lease_ttl_s=3, status_interval_s=0.5)
dclient = client_fixture("dag_cluster")


def _register(client: Any, unique: str, **functions: Any) -> dict[str, str]:
    names = {}
    for short, fn in functions.items():
        names[short] = f"{unique}-{short}"
        client.register(fn, names[short])
    return names


def test_linear_dag_direct_future_and_output_key(dclient: Any, unique: str) -> None:
    n = _register(dclient, unique, incr=lambda lib, x: x + 1, square=lambda lib, x: x * x)
    dag = unique + "-dag"
    assert dclient.register_dag(dag, [n["incr"], n["square"]], [(n["incr"], n["square"])]) == (
        True, None,
    )
    try:
        assert dclient.call_dag(dag, {n["incr"]: [1]}, direct_response=True, timeout=10) == 4
        fut = dclient.call_dag(dag, {n["incr"]: [2]})
        assert isinstance(fut, droplet.DropletFuture)
        assert fut.get(timeout=10) == 9
        out_key = unique + "-out"
        dclient.call_dag(dag, {n["incr"]: [3]}, output_key=out_key).get(timeout=10)
        assert dclient.get_object(out_key) == 16
    finally:
        assert dclient.delete_dag(dag) == (True, None)


def test_register_dag_errors(dclient: Any, unique: str) -> None:
    n = _register(dclient, unique, a=lambda lib: 1, b=lambda lib, x: x)
    dag = unique + "-dag"
    assert dclient.register_dag(dag, [n["a"], unique + "-ghost"], []) == (
        False, droplet.FUNC_NOT_FOUND,
    )
    assert dclient.register_dag(dag, [n["a"], n["b"]], [(n["a"], n["b"])]) == (True, None)
    try:
        assert dclient.register_dag(dag, [n["a"], n["b"]], [(n["a"], n["b"])]) == (
            False, droplet.DAG_ALREADY_EXISTS,
        )
    finally:
        assert dclient.delete_dag(dag) == (True, None)
    assert dclient.delete_dag(dag) == (False, droplet.NO_SUCH_DAG)
    cyclic = dclient.register_dag(dag, [n["a"], n["b"]], [(n["a"], n["b"]), (n["b"], n["a"])])
    assert cyclic == (False, droplet.INVALID_REQUEST)


def test_more_functions_than_workers_answers_no_resources(dclient: Any, unique: str) -> None:
    fns = {f"f{i}": (lambda lib, *a: 0) for i in range(5)}
    n = _register(dclient, unique, **fns)
    chain = list(n.values())
    result = dclient.register_dag(unique + "-big", chain, list(itertools.pairwise(chain)))
    assert result == (False, droplet.NO_RESOURCES)
    # Rolled back: every worker is free again, so a smaller DAG fits at once.
    assert dclient.register_dag(unique + "-small", chain[:4], []) == (True, None)
    assert dclient.delete_dag(unique + "-small") == (True, None)


def test_fan_out_fan_in_and_argument_order(dclient: Any, unique: str) -> None:
    n = _register(
        dclient, unique,
        src=lambda lib, x: x,
        left=lambda lib, x: ("L", x),
        right=lambda lib, x: ("R", x),
        join=lambda lib, tag, a, b: [tag, a, b],
    )
    dag = unique + "-dag"
    edges = [(n["src"], n["left"]), (n["src"], n["right"]),
             (n["right"], n["join"]), (n["left"], n["join"])]
    assert dclient.register_dag(dag, list(n.values()), edges) == (True, None)
    try:
        result = dclient.call_dag(dag, {n["src"]: [7], n["join"]: ["own"]},
                                  direct_response=True, timeout=10)
        assert result == ["own", ("R", 7), ("L", 7)], "own args, then upstreams in edge order"
    finally:
        dclient.delete_dag(dag)


def test_several_sinks_return_a_dict(dclient: Any, unique: str) -> None:
    n = _register(dclient, unique, src=lambda lib, x: x, double=lambda lib, x: 2 * x,
                  triple=lambda lib, x: 3 * x)
    dag = unique + "-dag"
    edges = [(n["src"], n["double"]), (n["src"], n["triple"])]
    assert dclient.register_dag(dag, list(n.values()), edges) == (True, None)
    try:
        expected = {n["double"]: 10, n["triple"]: 15}
        assert dclient.call_dag(dag, {n["src"]: [5]}, direct_response=True, timeout=10) == expected
        assert dclient.call_dag(dag, {n["src"]: [5]}).get(timeout=10) == expected
    finally:
        dclient.delete_dag(dag)


def test_a_failing_node_ends_the_call_with_its_error(dclient: Any, unique: str) -> None:
    def broken(lib: Any, x: Any) -> None:
        raise KeyError("node exploded")

    n = _register(dclient, unique, first=lambda lib, x: x, broken=broken,
                  last=lambda lib, x: x)
    dag = unique + "-dag"
    edges = [(n["first"], n["broken"]), (n["broken"], n["last"])]
    assert dclient.register_dag(dag, list(n.values()), edges) == (True, None)
    try:
        with pytest.raises(droplet.ExecutionError, match="node exploded") as info:
            dclient.call_dag(dag, {n["first"]: [1]}, direct_response=True, timeout=10)
        assert "KeyError" in info.value.remote_traceback
        with pytest.raises(droplet.ExecutionError, match="node exploded"):
            dclient.call_dag(dag, {n["first"]: [1]}).get(timeout=10)
    finally:
        dclient.delete_dag(dag)


def test_calling_an_unknown_dag_raises_no_such_dag(dclient: Any, unique: str) -> None:
    with pytest.raises(droplet.NoSuchDagError):
        dclient.call_dag(unique, {}, direct_response=True, timeout=10)
    with pytest.raises(droplet.NoSuchDagError):
        dclient.call_dag(unique, {}).get(timeout=10)


def test_many_concurrent_calls_of_one_dag(dclient: Any, unique: str) -> None:
    n = _register(dclient, unique, incr=lambda lib, x: x + 1, square=lambda lib, x: x * x)
    dag = unique + "-dag"
    assert dclient.register_dag(dag, [n["incr"], n["square"]], [(n["incr"], n["square"])])[0]
    try:
        futures = [dclient.call_dag(dag, {n["incr"]: [i]}) for i in range(200)]
        assert [f.get(timeout=30) for f in futures] == [(i + 1) ** 2 for i in range(200)]
    finally:
        dclient.delete_dag(dag)


def test_a_pinned_worker_still_serves_plain_calls(dclient: Any, unique: str) -> None:
    n = _register(dclient, unique, a=lambda lib: 0, b=lambda lib: 0, c=lambda lib: 0,
                  d=lambda lib: 0)
    dag = unique + "-dag"
    assert dclient.register_dag(dag, list(n.values()), []) == (True, None)
    try:
        whoami = dclient.register(lambda lib: lib.getid(), unique + "-who")
        assert isinstance(whoami().get(timeout=10), str)
    finally:
        dclient.delete_dag(dag)


def test_logs_dir_exists(dag_cluster: Cluster) -> None:
    assert Path(dag_cluster.log_dir).is_dir()
