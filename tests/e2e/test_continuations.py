"""Chains of DAG calls (call_dag(..., continuation=...)), dry runs, client.list and
client.get_function through real `droplet` processes, from the threaded and asyncio clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import droplet
import droplet.aio
from tests.conftest import Cluster, client_fixture, cluster_fixture

pytestmark = pytest.mark.e2e

chain_cluster = cluster_fixture(workers=4, worker_lease_ttl_s=3, status_interval_s=0.5)
cclient = client_fixture("chain_cluster")


@contextmanager
def dags(client: Any, *specs: tuple[str, list[str], list[tuple[str, str]]]) -> Iterator[None]:
    """Registers DAGs for the length of a test, and deletes them after."""
    made = []
    try:
        for name, functions, connections in specs:
            assert client.register_dag(name, functions, connections) == (True, None)
            made.append(name)
        yield
    finally:
        for name in made:
            client.delete_dag(name)


def test_a_chain_of_dags_answers_with_the_last_result(cclient: Any, unique: str) -> None:
    u = unique
    cclient.register(lambda lib, x: x + 1, u + "-incr")
    cclient.register(lambda lib, k, x: k * x, u + "-scale")
    cclient.register(lambda lib, x: ("L", x), u + "-left")
    cclient.register(lambda lib, x: ("R", x), u + "-right")
    with dags(cclient, (u + "-d1", [u + "-incr"], []), (u + "-d2", [u + "-scale"], []),
              (u + "-d3", [u + "-left", u + "-right"], [])):
        chain = [(u + "-d2", {u + "-scale": [10]}), u + "-d3"]
        expected = {u + "-left": ("L", 20), u + "-right": ("R", 20)}
        assert cclient.call_dag(u + "-d1", {u + "-incr": [1]}, continuation=chain,
                                direct_response=True, timeout=20) == expected
        assert cclient.call_dag(u + "-d1", {u + "-incr": [1]},
                                continuation=chain).get(timeout=20) == expected
        cclient.call_dag(u + "-d1", {u + "-incr": [2]}, continuation=(u + "-d2", {
            u + "-scale": [3]}), output_key=u + "-out").get(timeout=20)
        assert cclient.get_object(u + "-out") == 9, "the output key holds the last result"


def test_an_error_anywhere_in_a_chain_reaches_the_caller(cclient: Any, unique: str) -> None:
    u = unique

    def scale(lib: Any, k: int, x: int) -> int:
        lib.put(f"{u}-scaled-k{k}", x)
        if k == 0:
            raise ValueError("k must not be 0")
        return k * x

    cclient.register(lambda lib, x: x + 1, u + "-incr")
    cclient.register(scale, u + "-scale")
    with dags(cclient, (u + "-d1", [u + "-incr"], []), (u + "-d2", [u + "-scale"], [])):
        with pytest.raises(droplet.ExecutionError, match="k must not be 0"):
            cclient.call_dag(u + "-d1", {u + "-incr": [1]},
                             continuation=(u + "-d2", {u + "-scale": [0]})).get(timeout=20)
        with pytest.raises(droplet.ExecutionError, match=r"TypeError|can only concatenate"):
            cclient.call_dag(u + "-d1", {u + "-incr": ["x"]}, continuation=(
                u + "-d2", {u + "-scale": [1]}), direct_response=True, timeout=20)
        with pytest.raises(droplet.NoSuchDagError):
            cclient.call_dag(u + "-d1", {u + "-incr": [5]},
                             continuation=u + "-nowhere").get(timeout=20)
        time.sleep(0.5)
        assert cclient.get_object(f"{u}-scaled-k0") == 2, "the second DAG ran, given 1 + 1"
        assert cclient.get_object(f"{u}-scaled-k1") is None, "after a failure nothing runs"


def test_a_cancelled_chain_stops_where_it_is(cclient: Any, unique: str) -> None:
    """Cancelled while its first DAG runs, the chain's next DAG never runs; cancelled while
    its second DAG runs, that step is interrupted. Either way the caller gets CANCELLED."""
    u = unique

    def slow(lib: Any, x: int) -> int:
        import time as t

        lib.put(f"{u}-slow-{x}", "started")
        t.sleep(20)
        return x

    def mark(lib: Any, x: int) -> int:
        lib.put(f"{u}-marked-{x}", x)
        return x

    cclient.register(slow, u + "-slow")
    cclient.register(mark, u + "-mark")
    with dags(cclient, (u + "-d1", [u + "-slow"], []), (u + "-d2", [u + "-mark"], [])):
        for dag, first, then in ((u + "-d1", u + "-slow", u + "-d2"),
                                 (u + "-d2", u + "-mark", u + "-d1")):
            future = cclient.call_dag(dag, {first: [1]}, continuation=then)
            deadline = time.monotonic() + 15
            while cclient.get_object(f"{u}-slow-1") is None:
                assert time.monotonic() < deadline, "the slow step never started"
                time.sleep(0.05)
            started = time.monotonic()
            assert future.cancel() is True
            with pytest.raises(droplet.CancelledError):
                future.get(timeout=15)
            assert time.monotonic() - started < 10, "the running step was interrupted"
            cclient.delete_object(f"{u}-slow-1")
            time.sleep(1.0)
            marked = cclient.get_object(f"{u}-marked-1")
            assert marked == (None if dag == u + "-d1" else 1), "nothing ran after the cancel"


def test_a_dry_run_returns_the_request_and_sends_nothing(cclient: Any, unique: str) -> None:
    u = unique

    def mark(lib: Any, x: int) -> int:
        lib.put(f"{u}-ran", x)
        return x

    cclient.register(mark, u + "-mark")
    with dags(cclient, (u + "-d", [u + "-mark"], [])):
        request = cclient.call_dag(u + "-d", {u + "-mark": [5]}, output_key=u + "-o",
                                   continuation=(u + "-d", {}), dry_run=True)
        assert request["dag"] == u + "-d"
        assert request["arguments"] == {u + "-mark": [5]}
        assert request["output_key"] == u + "-o"
        assert request["continuation"] == [{"dag": u + "-d", "arguments": {}}]
        assert request["queue"].endswith(".scheduler.calls")
        time.sleep(1.0)
        assert cclient.get_object(u + "-ran") is None, "nothing was sent"
        assert cclient.call_dag(u + "-d", {u + "-mark": [6]}, direct_response=True,
                                timeout=20) == 6


def test_list_and_get_function_from_another_client(chain_cluster: Cluster, cclient: Any,
                                                   unique: str) -> None:
    cclient.register(lambda lib, x: x * 7, unique + "-b")
    cclient.register(lambda lib, x: x, unique + "-a")
    with droplet.connect(settings=chain_cluster.settings) as other:
        assert other.list(prefix=unique) == [unique + "-a", unique + "-b"]
        assert set(other.list()) >= {unique + "-a", unique + "-b"}
        seven = other.get_function(unique + "-b")
        assert seven(6).get(timeout=20) == 42
        with pytest.raises(droplet.FunctionNotFoundError) as missing:
            other.get_function(unique + "-ghost")
        assert missing.value.code == droplet.FUNC_NOT_FOUND


def test_the_asyncio_client_has_the_same(chain_cluster: Cluster, unique: str) -> None:
    u = unique

    async def body(client: Any) -> None:
        incr = await client.register(lambda lib, x: x + 1, u + "-incr")
        await client.register(lambda lib, x: x * 2, u + "-double")
        assert await client.list(u) == [u + "-double", u + "-incr"]
        handle = await client.get_function(u + "-incr")
        assert await handle(1) == 2
        with pytest.raises(droplet.FunctionNotFoundError):
            await client.get_function(u + "-ghost")
        for name, function in ((u + "-d1", incr.name), (u + "-d2", u + "-double")):
            assert await client.register_dag(name, [function], []) == (True, None)
        try:
            assert await client.call_dag(u + "-d1", {incr.name: [4]},
                                         continuation=u + "-d2") == 10
            shown = client.call_dag(u + "-d1", {incr.name: [4]}, dry_run=True)
            assert shown["arguments"] == {incr.name: [4]}
            awaited = await client.call_dag(u + "-d1", {incr.name: [4]}, dry_run=True)
            assert awaited["arguments"] == {incr.name: [4]}  # awaitable like any call_dag
        finally:
            await client.delete_dag(u + "-d1")
            await client.delete_dag(u + "-d2")

    async def main() -> None:
        async with await droplet.aio.connect(settings=chain_cluster.settings) as client:
            await asyncio.wait_for(body(client), 60)

    asyncio.run(main())
