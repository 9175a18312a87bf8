"""Attack on the client's DAG view (client/dagroutes.py, client/viewkeeper.py): the client
changes a DAG (register_dag, delete_dag: DagRoutes.forget) while the view's thread is in the
middle of a look, and calls it at once.

Found (df154ac): forget() is meant to make the next call read the view itself ("the next use
reads"), but while a look is under way ViewKeeper.usable() trusted the forgotten view: the call
went out on the pins read before the change, to the worker that held the pin before, which
handed it to a scheduler (a hop more, for as long as that look lasted: up to the store's
retries when etcd is slow). The look itself is rightly thrown away (it began before the
change); the call after forget() now reads the view itself whether a look is under way or
not. Likewise a look begun before forget() that failed (etcd away) marked the view as just
read, and one that ended between DagRoutes' check of its changes and looked() did too.
Run: .venv/bin/python -m pytest -q tests/unit/test_dag_view_forgotten_mid_look.py
"""

from __future__ import annotations

import threading
import time
from typing import Any

from droplet.client.viewkeeper import ViewKeeper

from .test_dag_direct import RUNS, _call, _fleet, _move_pin


def test_the_call_after_forget_reads_the_pins_even_while_a_look_is_under_way() -> None:
    fleet, client, published, clock = _fleet(("w1", "w2", "w3"))
    routes = client.dag_routes
    metadata = routes._metadata
    pins = metadata.pins
    gate, reading = threading.Event(), threading.Event()

    def slow_pins() -> Any:
        if threading.current_thread().name == "droplet-dag-view":
            reading.set()
            gate.wait(10)  # etcd slow for the view's thread only
        return pins()

    try:
        assert _call(fleet, client, 1) == ["second", ["first", 1]]
        metadata.pins = slow_pins  # type: ignore[method-assign]
        clock.now += 1.5
        assert routes.view.usable()  # the thread's look begins, and hangs in pins()
        assert reading.wait(5)
        # The client registers the DAG again: its source is pinned on w3 now.
        _move_pin(fleet, "w1", "w3", "first")
        routes.forget("d")
        before = published.copy()
        assert _call(fleet, client, 2) == ["second", ["first", 2]]
        assert published[fleet.names.calls] == before[fleet.names.calls], (
            "the call went out on the pins read before forget(): w1 handed it to a scheduler")
        assert published[fleet.names.worker("w3")] == before[fleet.names.worker("w3")] + 1
        assert RUNS["first@w1"] == 1 and RUNS["first@w3"] == 1
    finally:
        gate.set()
        client.close()


def test_a_look_under_way_keeps_a_forgotten_view_unused() -> None:
    now = [1000.0]
    gate, reading = threading.Event(), threading.Event()
    keeper: ViewKeeper

    def look() -> None:
        reading.set()
        gate.wait(10)
        keeper.looked()

    keeper = ViewKeeper(look, "test-view", clock=lambda: now[0])
    try:
        keeper.looked()
        now[0] += 1.5
        assert keeper.usable()  # a look is asked for; it hangs
        assert reading.wait(5)
        keeper.forget()
        assert not keeper.usable(), "a forgotten view was used"
        keeper.looked()  # the caller read it itself
        assert keeper.usable()
    finally:
        gate.set()
        keeper.close()
        deadline = time.monotonic() + 5
        while keeper.thread is not None and keeper.thread.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_a_look_that_fails_after_forget_leaves_the_view_forgotten() -> None:
    now = [1000.0]
    gate, reading = threading.Event(), threading.Event()

    def look() -> None:
        reading.set()
        gate.wait(10)
        raise OSError("etcd away")

    keeper = ViewKeeper(look, "test-view", clock=lambda: now[0])
    try:
        keeper.looked()
        now[0] += 1.5
        assert keeper.usable()
        assert reading.wait(5)
        keeper.forget()
        gate.set()
        deadline = time.monotonic() + 5
        while keeper.busy():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not keeper.usable(), "a failed look begun before forget() made the view fresh"
    finally:
        gate.set()
        keeper.close()
