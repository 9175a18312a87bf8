"""A DAG call's first trigger sent by the client straight to its source's pinned worker
(client/dagroutes.py, worker/direct.py), in one process over the stub broker: no message
through the scheduler queue when the client's view holds; the scheduler path, and one outcome,
whenever it does not (a worker queue gone, a pin moved, a DAG the client cannot schedule)."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

from droplet.client.client import DropletClient
from droplet.client.dagroutes import DagRoutes
from droplet.proto import pb
from droplet.store.metadata import Metadata

from .inprocess import Fleet

RUNS: Counter[str] = Counter()


def first(lib: Any, *args: Any) -> Any:
    RUNS[f"first@{lib.getid()}"] += 1
    return ["first", *args]


def second(lib: Any, *args: Any) -> Any:
    RUNS[f"second@{lib.getid()}"] += 1
    return ["second", *args]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fleet(workers: tuple[str, ...] = ("w1", "w2")) -> tuple[Fleet, DropletClient, Counter[str],
                                                               Clock]:
    RUNS.clear()
    fleet = Fleet()
    for w in workers:
        fleet.start_worker(w)
    fleet.start_scheduler()
    fleet.register("first", first)
    fleet.register("second", second)
    dag = pb.Dag(name="d", functions=["first", "second"])
    for source, sink in itertools.pairwise(["first", "second"]):
        dag.connections.add(source=source, sink=sink)
    fleet.pin(dag, {"first": "w1", "second": "w2"})
    client = DropletClient(fleet.settings, fleet.kv, fleet.broker.connect)
    clock = Clock()
    client.dag_routes = DagRoutes(client.metadata, clock=clock)
    return fleet, client, fleet.count_published(), clock


def _call(fleet: Fleet, client: DropletClient, x: int, **options: Any) -> Any:
    future = client.call_dag("d", {"first": [x]}, direct_response=True, traced=True, **options)
    client.pump.drive(0.01)  # a returned (unroutable) trigger's fallback goes out here
    fleet.run_until_quiet()
    return future.get(timeout=2)


def test_a_direct_routed_dag_call_sends_nothing_through_the_scheduler_queue() -> None:
    fleet, client, published, _ = _fleet()
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        assert _call(fleet, client, 2) == ["second", ["first", 2]]
        assert published[fleet.names.calls] == 0
        # One message per hop: client -> w1 -> w2 -> client, per call.
        assert published[fleet.names.worker("w1")] == 2
        assert published[fleet.names.worker("w2")] == 2
        assert RUNS == {"first@w1": 2, "second@w2": 2}
    finally:
        client.close()


def test_a_future_dag_call_sent_directly_is_stored_and_answered_once() -> None:
    fleet, client, published, _ = _fleet()
    try:
        future = client.call_dag("d", {"first": [3]}, output_key="out")
        fleet.run_until_quiet()
        assert future.get(timeout=2) == ["second", ["first", 3]]
        assert fleet.values.get("out") is not None
        assert published[fleet.names.calls] == 0
    finally:
        client.close()


def test_a_worker_queue_gone_sends_the_call_through_the_scheduler_and_it_is_answered() -> None:
    fleet, client, published, _ = _fleet(("w1", "w2", "w3"))
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]  # the view is read now
        # w1 dies and its queue is deleted (reaped); its pin moves to w3. The client's view,
        # read less than a second ago, still says w1.
        fleet.crash("w1")
        fleet.broker.queues.pop(fleet.names.worker("w1"))
        _move_pin(fleet, "w1", "w3", "first")
        assert _call(fleet, client, 2) == ["second", ["first", 2]]
        assert published[fleet.names.calls] == 1  # the fallback DagCall
        assert RUNS["first@w3"] == 1
    finally:
        client.close()


def test_a_trigger_for_a_pin_that_moved_is_handed_to_the_scheduler_by_the_worker() -> None:
    fleet, client, published, _ = _fleet(("w1", "w2", "w3"))
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        _move_pin(fleet, "w1", "w3", "first")  # w1 lives on, unpinned; the client lags
        assert _call(fleet, client, 2) == ["second", ["first", 2]]
        assert RUNS == {"first@w1": 1, "first@w3": 1, "second@w2": 2}
        assert published[fleet.names.calls] == 1  # w1 handed it over
    finally:
        client.close()


def test_a_clients_trigger_drained_from_a_dead_workers_queue_is_still_answered() -> None:
    """The reaper moves what a dead worker left to the scheduler queue, reply-to included:
    the scheduler takes the client's reply address from it, as the worker would have."""
    fleet, client, _, _ = _fleet(("w1", "w2", "w3"))
    try:
        future = client.call_dag("d", {"first": [7]}, direct_response=True, traced=True)
        fleet.crash("w1")  # before it took the trigger
        probe = fleet.broker.connect("reaper")
        queue = fleet.names.worker("w1")
        while (left := probe.get(queue)) is not None:
            probe.publish(fleet.names.calls, left.body, reply_to=left.reply_to,
                          correlation_id=left.correlation_id)
            probe.ack(left.tag)
        _move_pin(fleet, "w1", "w3", "first")
        fleet.run_until_quiet()
        assert future.get(timeout=2) == ["second", ["first", 7]]
        assert RUNS == {"first@w3": 1, "second@w2": 1}
    finally:
        client.close()


def test_a_re_pinned_dag_is_followed_once_the_clients_thread_has_looked_again() -> None:
    """A second on, the call goes out on the view it has (through the old pin's worker, which
    hands it to a scheduler, or straight to the new one if the look was quick) while a thread
    reads the view again; the calls after that look go to the new pin's worker."""
    fleet, client, published, clock = _fleet(("w1", "w2", "w3"))
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        _move_pin(fleet, "w1", "w3", "first")
        clock.now += 1.5
        assert _call(fleet, client, 2) == ["second", ["first", 2]]
        _wait_for_the_look(client)
        before = published.copy()
        assert _call(fleet, client, 3) == ["second", ["first", 3]]
        assert published[fleet.names.calls] == before[fleet.names.calls]
        assert published[fleet.names.worker("w3")] == before[fleet.names.worker("w3")] + 1
        assert RUNS["first@w3"] == 2 and RUNS["first@w1"] == 1
    finally:
        client.close()


def test_an_idle_clients_call_reads_the_view_itself_and_follows_a_re_pinned_dag() -> None:
    fleet, client, published, clock = _fleet(("w1", "w2", "w3"))
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        _move_pin(fleet, "w1", "w3", "first")
        clock.now += 2.5  # older than STALE_S: not trusted
        assert _call(fleet, client, 2) == ["second", ["first", 2]]
        assert RUNS["first@w3"] == 1
        assert published[fleet.names.calls] == 0
        assert published[fleet.names.worker("w3")] == 1
    finally:
        client.close()


def test_a_dag_call_never_waits_for_the_view_to_be_read_again() -> None:
    """Before, the call that found the view a second old read the pins, the workers and the
    DAG from etcd itself: once a second a DAG call took three etcd round trips longer."""
    fleet, client, published, clock = _fleet()
    gate = threading.Event()
    metadata = client.dag_routes._metadata
    pins = metadata.pins

    def slow_pins() -> Any:
        gate.wait(10)
        return pins()

    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        metadata.pins = slow_pins  # type: ignore[method-assign]
        clock.now += 1.5
        futures: list[Any] = []
        caller = threading.Thread(target=lambda: futures.append(
            client.call_dag("d", {"first": [2]}, direct_response=True, traced=True)))
        caller.start()
        caller.join(5)
        hung = caller.is_alive()
        gate.set()
        assert not hung, "the call waited for etcd"
        assert client.dag_routes.view.busy() or published[fleet.names.worker("w1")] == 2
        fleet.run_until_quiet()
        assert futures[0].get(timeout=2) == ["second", ["first", 2]]
        _wait_for_the_look(client)
        assert published[fleet.names.calls] == 0
    finally:
        gate.set()
        client.close()


def test_a_look_begun_before_the_client_changed_the_dag_is_not_kept() -> None:
    """A look the thread began before this client registered or deleted the DAG may hold
    the DAG as it was: the next call reads the view itself instead of trusting it."""
    fleet, client, _published, clock = _fleet()
    gate, reading = threading.Event(), threading.Event()
    routes = client.dag_routes
    metadata = routes._metadata
    pins = metadata.pins

    def slow_pins() -> Any:
        reading.set()
        gate.wait(10)
        return pins()

    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        metadata.pins = slow_pins  # type: ignore[method-assign]
        clock.now += 1.5
        assert routes.view.usable()  # asks the thread for a look; it hangs in pins()
        assert reading.wait(5)
        routes.forget("d")
        gate.set()
        _wait_for_the_look(client)
        assert not routes.view.usable(), "the look begun before forget() was trusted"
        assert routes._dags == {}
    finally:
        gate.set()
        client.close()


def _wait_for_the_look(client: DropletClient) -> None:
    deadline = time.monotonic() + 5
    while client.dag_routes.view.busy():
        assert time.monotonic() < deadline, "the view's look never ended"
        time.sleep(0.005)


def test_a_deleted_dag_is_answered_no_such_dag_even_by_a_client_that_lags() -> None:
    fleet, client, _, _ = _fleet()
    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        metadata = Metadata(fleet.kv, fleet.settings, fleet.signer)
        for pin in metadata.pins():  # what delete_dag does, behind this client's back
            fleet.workers[pin.worker_id].service.state.pinned = None
            metadata.release_pin(pin)
        metadata.delete_dag("d")
        fleet.scheduler.fleet.refresh()  # type: ignore[union-attr]
        with pytest.raises(Exception, match="no DAG named"):
            _call(fleet, client, 2)
    finally:
        client.close()


@pytest.mark.parametrize("case", ["restarted", "reference", "unknown function", "off"])
def test_what_only_a_scheduler_decides_keeps_the_scheduler_path(case: str) -> None:
    fleet, client, published, clock = _fleet()
    try:
        args: dict[str, list[Any]] = {"first": [1]}
        if case == "restarted":
            _call(fleet, client, 0)
            published.clear()
            fleet.workers["w1"].service.incarnation = "new"
            fleet.workers["w1"].service.status.incarnation = "new"
            fleet.workers["w1"].service.membership.publish()
            clock.now += 2.5  # an idle client: the call reads the view itself
        elif case == "off":
            client.settings = dataclasses.replace(client.settings, dag_direct=False)
        elif case == "reference":
            client.put_object("k", 5)
            from droplet import DropletReference
            args = {"first": [DropletReference("k")]}
        elif case == "unknown function":
            args = {"first": [1], "nope": [2]}
        future = client.call_dag("d", args, direct_response=True, traced=True)
        fleet.run_until_quiet()
        if case == "unknown function":
            with pytest.raises(Exception, match="not functions of DAG"):
                future.get(timeout=2)
        else:
            assert future.get(timeout=2)[0] == "second"
        assert published[fleet.names.calls] == 1
    finally:
        client.close()


def _move_pin(fleet: Fleet, old: str, new: str, function: str) -> None:
    """What healing does: the pin leaves `old` (dead or not) for `new`."""
    metadata = Metadata(fleet.kv, fleet.settings, fleet.signer)
    pin = metadata.pin_of(old)
    assert pin is not None
    assert metadata.release_pin(pin)
    assert metadata.claim_pin(new, "d", function)
    if old in fleet.workers:
        fleet.workers[old].service.state.pinned = None
    fleet.workers[new].service.state.pinned = ("d", function)
    fleet.scheduler.fleet.refresh()  # type: ignore[union-attr]
    fleet.scheduler.state.pins.pop(old, None)  # type: ignore[union-attr]
