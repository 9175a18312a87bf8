"""Priorities end to end: urgent calls overtake a backlog (and by how much they cannot), hostile
priorities are refused, and queues declared by an older version are migrated, messages kept."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.broker.interface import QueueSpec, Topology
from droplet.broker_config.names import QueueNames
from droplet.cli.main import main as droplet_main
from droplet.proto import envelope, pb
from droplet.runtime import broker_factory
from droplet.signing import Signer
from droplet.store import serializer
from tests.conftest import Services, client_fixture, cluster_fixture, purge_namespace, start_cluster

pytestmark = [pytest.mark.e2e]

one_worker = cluster_fixture(workers=1, worker_lease_ttl_s=2, status_interval_s=0.5)
pclient = client_fixture("one_worker")


def _timed(lib: Any, seconds: float) -> float:
    import time as t

    t.sleep(seconds)
    return t.time()


def _overtaken_by(pclient: Any, name: str, urgent_priority: int) -> tuple[int, int]:
    """200 ordinary calls queue behind one worker, then 5 urgent ones: how many ordinary
    calls finished after the urgent ones were sent and before the last of them, and how many
    were still waiting when they were sent."""
    ordinary = pclient.register(_timed, name)
    backlog = [ordinary(0.01) for _ in range(200)]
    pclient.batcher.flush()
    time.sleep(0.3)  # the backlog is in the queue, the worker busy with it
    sent = time.time()
    urgent = [ordinary.with_priority(urgent_priority)(0.0) for _ in range(5)]
    urgent_done = max(f.get(timeout=60) for f in urgent)
    finished = [f.get(timeout=60) for f in backlog]
    ahead = sum(1 for t in finished if sent < t < urgent_done)
    waiting = sum(1 for t in finished if t > sent)
    return ahead, waiting


def test_urgent_calls_overtake_a_backlog(pclient: Any, unique: str) -> None:
    ahead, waiting = _overtaken_by(pclient, unique, 9)
    print(f"priority 9 behind a backlog of {waiting} calls: {ahead} ran first")
    # What runs first is what the worker holds already: one envelope (16 calls at most with
    # one worker) and the call in hand.
    assert waiting > 100, "there was a backlog to overtake"
    assert ahead <= 32, f"{ahead} ordinary calls ran before the urgent ones"


def test_without_a_priority_the_same_calls_wait_their_turn(pclient: Any, unique: str) -> None:
    """The control: the test above fails when priorities do nothing."""
    ahead, waiting = _overtaken_by(pclient, unique, 0)
    print(f"priority 0 behind a backlog of {waiting} calls: {ahead} ran first")
    # More ran first than the test above allows: that is what makes it a control. How many
    # more is not asserted: on a loaded host runs of the backlog pass 20 ms, and the calls of
    # their deliveries not started yet go back to the end of the shared queue (worker/keeper.py,
    # handback.py), behind the "urgent" ones; CI runs saw 111 and 57 of 175 ahead. Equal
    # priorities promise no order; the test above is the promise.
    assert ahead > 32, f"only {ahead} of {waiting} waiting calls ran first"


@pytest.mark.parametrize("priority", [-1, 10, 1000, 2**40, 1.5, "9", None, True])
def test_hostile_priorities_are_refused(pclient: Any, unique: str, priority: Any) -> None:
    fn = pclient.register(lambda lib: 1, unique)
    with pytest.raises(droplet.InvalidArgumentError):
        fn.with_priority(priority)
    with pytest.raises(droplet.InvalidArgumentError):
        pclient.register(lambda lib: 1, unique, priority=priority)
    with pytest.raises(droplet.InvalidArgumentError):
        pclient.submit(unique, (), priority=priority)


def test_queues_of_an_older_version_are_refused_clearly_then_migrated(
        services: Services, tmp_path: Path) -> None:
    settings = services.settings()
    names = QueueNames(settings.namespace)
    old = [QueueSpec(q, durable=True, arguments={"x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": names.dead})
           for q in (names.calls, names.work)]
    connect = broker_factory(settings, "old-version")
    conn = connect()
    try:
        conn.declare(Topology(queues=[QueueSpec(names.dead), *old]))
        calls = []
        for i in range(3):  # calls an older client left waiting in the work queue
            call = pb.FunctionCall(name="double", call_id=f"old{i}-{uuid.uuid4().hex[:6]}")
            call.response_key = call.call_id
            serializer.dump(i, call.arguments.values.add())
            calls.append(call)
            conn.publish(names.work, envelope.encode([pb.Message(call=call)], Signer(None)))
        conn.poll(0.2)
    finally:
        conn.close()
    with pytest.raises(droplet.ConfigurationError, match="migrate-queues"):
        droplet.connect(settings=settings)
    env = {"DROPLET_BROKER_URL": settings.broker_url,
           "DROPLET_ETCD": settings.etcd_endpoints[0]}
    argv = ["--namespace", settings.namespace, "--broker-url", env["DROPLET_BROKER_URL"],
            "--etcd", env["DROPLET_ETCD"], "migrate-queues"]
    assert droplet_main(argv) == 0
    assert droplet_main(argv) == 0, "again: nothing left to do"
    fleet = start_cluster(settings, tmp_path, workers=1)
    try:
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: 2 * x, "double")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                    client.values.outcome(c.call_id) is None for c in calls):
                time.sleep(0.2)
            results = [serializer.load(client.values.outcome(c.call_id)) for c in calls]
            assert [getattr(r, "code", r) for r in results] in (
                [0, 2, 4], [pb.FUNC_NOT_FOUND] * 3), results
            urgent = client.register(lambda lib: "urgent", "urgent", priority=9)
            assert urgent().get(timeout=10) == "urgent"
    finally:
        fleet.stop()
        purge_namespace(settings, fleet.worker_ids())
