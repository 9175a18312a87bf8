"""Delayed calls end to end: call_later / call_at wait in the broker, run once after their time,
can be cancelled, refuse hostile delays, and survive a RabbitMQ restart and a killed
scheduler."""

from __future__ import annotations

import math
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.client.cancel import is_cancelled
from tests.conftest import (
    Cluster,
    Services,
    client_fixture,
    cluster_fixture,
    purge_namespace,
    start_cluster,
)
from tests.private_rabbit import needs_rabbitmq_server

pytestmark = [pytest.mark.e2e]

cluster = cluster_fixture(workers=2, worker_lease_ttl_s=2, status_interval_s=0.5)
dclient = client_fixture("cluster")


def _stamping(client: Any, name: str) -> Any:
    """A function leaving one mark per run, holding the time it ran (to count runs)."""

    def stamp(lib: Any, tag: str) -> float:
        import time as t
        import uuid as u

        now = t.time()
        lib.put(f"{tag}-run-{u.uuid4().hex[:8]}", now)
        return now

    return client.register(stamp, name)


def _runs(client: Any, tag: str) -> list[float]:
    items, _ = client.kv.get_prefix(client.values.keys.value(f"{tag}-run-"))
    return sorted(client.get_object(client.values.keys.relative(k)[len("values/"):])
                  for k in items)


def test_call_later_and_call_at_run_after_their_time(dclient: Any, unique: str) -> None:
    fn = _stamping(dclient, unique)
    sent = time.time()
    later = fn.call_later(1.5, unique + "-later")
    at = fn.call_at(datetime.now(UTC) + timedelta(seconds=1.0), unique + "-at")
    past = fn.call_at(datetime.now(UTC) - timedelta(hours=1), unique + "-past")
    ran_later, ran_at, ran_past = later.get(), at.get(), past.get(timeout=10)
    assert ran_later >= sent + 1.5 and ran_at >= sent + 1.0, "not before its time"
    # (bounds with room for a loaded host; a call held back a poll of minutes fails them)
    assert ran_later < sent + 6.0 and ran_at < sent + 5.5, "and not much after"
    assert ran_past < sent + 4.0, "a time already past runs now"
    for tag in ("-later", "-at", "-past"):
        assert len(_runs(dclient, unique + tag)) == 1
    print(f"late by: call_later {ran_later - sent - 1.5:.3f}s, call_at {ran_at - sent - 1.0:.3f}s")


def test_a_cancelled_delayed_call_never_runs(dclient: Any, unique: str) -> None:
    fn = _stamping(dclient, unique)
    mine = fn.call_later(1.5, unique + "-mine")
    theirs = fn.call_later(1.5, unique + "-theirs")
    kept = fn.call_later(1.5, unique + "-kept")
    assert mine.cancel() is True
    with droplet.connect(settings=dclient.settings) as other:
        assert other.cancel(theirs.call_id) is True
    with pytest.raises(droplet.CancelledError):
        mine.get(timeout=1)
    with pytest.raises(droplet.CancelledError):
        theirs.get(timeout=10)  # its caller learns it from the store
    assert kept.get(timeout=10) > 0
    time.sleep(1.0)
    assert _runs(dclient, unique + "-mine") == [] and _runs(dclient, unique + "-theirs") == []
    assert is_cancelled(dclient.values.outcome(theirs.call_id))


@pytest.mark.parametrize("delay", [-1, -0.001, math.nan, math.inf, "5", True, None,
                                   10 * 86400.0])
def test_hostile_delays_are_refused_before_sending(dclient: Any, unique: str,
                                                   delay: Any) -> None:
    fn = dclient.register(lambda lib: 1, unique)
    with pytest.raises(droplet.InvalidArgumentError):
        fn.call_later(delay)


def test_hostile_times_are_refused_before_sending(dclient: Any, unique: str) -> None:
    fn = dclient.register(lambda lib: 1, unique)
    for when in ("tomorrow", math.nan, None, datetime.now() + timedelta(days=30)):
        with pytest.raises(droplet.InvalidArgumentError):
            fn.call_at(when)


def test_many_delayed_calls_each_run_once_after_their_time(dclient: Any, unique: str) -> None:
    fn = _stamping(dclient, unique)
    delays = [0.05 * i for i in range(60)]
    sent = time.time()
    futures = [fn.call_later(d, f"{unique}-{i}") for i, d in enumerate(delays)]
    lateness = []
    for i, future in enumerate(futures):
        ran = future.get(timeout=30)
        assert ran >= sent + delays[i], f"call {i} ran before its time"
        lateness.append(ran - sent - delays[i])
        assert len(_runs(dclient, f"{unique}-{i}")) == 1, f"call {i} ran once"
    lateness.sort()
    print(f"60 delayed calls: late by p50 {lateness[30]:.3f}s, max {lateness[-1]:.3f}s")


def _count_runs(client: Any, tags: list[str]) -> dict[str, list[float]]:
    return {tag: _runs(client, tag) for tag in tags}


def _check_each_ran_once_after_its_time(client: Any, tags: list[str], due: list[float],
                                        futures: list[Any]) -> str:
    for future in futures:
        future.get(timeout=90)
    runs = _count_runs(client, tags)
    for tag, when in zip(tags, due, strict=True):
        assert len(runs[tag]) == 1, f"{tag} ran {len(runs[tag])} times"
        assert runs[tag][0] >= when - 0.01, f"{tag} ran {when - runs[tag][0]:.2f}s early"
    late = sorted(runs[t][0] - d for t, d in zip(tags, due, strict=True))
    return f"late by p50 {late[len(late) // 2]:.2f}s, max {late[-1]:.2f}s"


@pytest.mark.fault
def test_a_scheduler_killed_while_calls_wait_each_runs_once_after_its_time(
        services: Services, tmp_path: Path) -> None:
    settings = services.settings(worker_lease_ttl_s=2)
    fleet = start_cluster(settings, tmp_path, workers=2)
    name = f"u{uuid.uuid4().hex[:8]}"
    try:
        with droplet.connect(settings=settings) as client:
            fn = _stamping(client, name)
            now = time.time()
            tags = [f"{name}-{i}" for i in range(20)]
            due = [now + 2.0 + 0.2 * i for i in range(20)]
            futures = [fn.call_at(d, t) for t, d in zip(tags, due, strict=True)]
            time.sleep(1.0)
            os.kill(fleet.schedulers[0].pid, signal.SIGKILL)
            fleet.schedulers[0].wait(10)
            time.sleep(3.0)  # calls come due while no scheduler runs
            fleet.start_scheduler()
            print("scheduler killed for 3 s: 20 delayed calls, "
                  + _check_each_ran_once_after_its_time(client, tags, due, futures))
    finally:
        fleet.stop()
        purge_namespace(settings, fleet.worker_ids())


@pytest.mark.fault
@needs_rabbitmq_server
def test_a_rabbitmq_restart_while_calls_wait_each_runs_once_after_its_time(
        services: Services, tmp_path: Path) -> None:
    from tests.private_rabbit import PrivateRabbit

    rabbit = PrivateRabbit(tmp_path / "rabbit", label="delays").start()  # not the shared one
    settings = services.settings(worker_lease_ttl_s=3).with_(broker_url=rabbit.url)
    fleet: Cluster | None = None
    try:
        fleet = start_cluster(settings, tmp_path, workers=2)
        name = f"u{uuid.uuid4().hex[:8]}"
        with droplet.connect(settings=settings) as client:
            fn = _stamping(client, name)
            now = time.time()
            tags = [f"{name}-{i}" for i in range(30)]
            due = [now + 4.0 + 0.2 * i for i in range(30)]
            futures = [fn.call_at(d, t) for t, d in zip(tags, due, strict=True)]
            time.sleep(1.5)
            rabbit.ctl("stop_app")
            time.sleep(1.0)
            rabbit.ctl("start_app")
            print("RabbitMQ restarted: 30 delayed calls, "
                  + _check_each_ran_once_after_its_time(client, tags, due, futures))
    finally:
        if fleet is not None:
            fleet.stop()
        rabbit.stop()
