"""Attack (real scheduler and worker, real RabbitMQ and etcd): a client idles while the last
worker leaves, then calls again.

Found: since the look at the fleet moved to a thread of its own (a0b1386), the call that finds
the last look old goes out with it however old it is (minutes, for a client that idled): the
view said one worker alive, so the call went to the shared queue, where no worker would ever
take it, and waited for its whole timeout, where before it read etcd itself and was answered
NO_RESOURCES at once, as the README promises ("When no worker is alive a call is answered
NO_RESOURCES at once"). A stream of calls keeps the view fresh through the thread; only a
view older than a few recheck intervals (nobody called meanwhile) is now read again by the
call itself, as before.
Run: .venv/bin/python -m pytest -q tests/attack/test_stale_fleet_view_after_idle.py
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import purge_namespace
from tests.conftest import Services, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


@pytest.mark.timeout(120)
def test_an_idle_clients_call_after_the_last_worker_left_answers_no_resources(
        services: Services, tmp_path: Path) -> None:
    settings = services.settings(worker_lease_ttl_s=3)
    cluster = start_cluster(settings, tmp_path, workers=1)
    name = f"u{uuid.uuid4().hex[:8]}"
    try:
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: x + 1, name)
            assert client.call(name, 1).get(timeout=30) == 2
            worker = cluster.workers[0]
            worker.terminate()
            worker.wait(30)
            deadline = time.monotonic() + 20
            while client.kv.get_prefix(client.metadata.keys.workers)[0]:
                assert time.monotonic() < deadline, "the worker's record stayed"
                time.sleep(0.1)
            time.sleep(3.0)  # the client idles: its last look at the fleet is old
            started = time.monotonic()
            with pytest.raises(droplet.NoResourcesError):
                client.call(name, 2).get(timeout=15)
            assert time.monotonic() - started < 5, "answered at once, not after a timeout"
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_an_old_look_is_read_again_by_the_call_unless_the_refresher_is_at_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same in a unit: after an idle spell the call reads etcd itself (NO_RESOURCES once
    the last worker left); while the refresher's own look hangs (etcd slow), calls go on with
    the last look instead of waiting."""
    from droplet.client import routing
    from tests.unit.test_call_routing import KEYS, _SlowFleetKV, calls, router

    monkeypatch.setattr(routing, "_NONE_FOR_S", 0.2)
    kv = _SlowFleetKV()
    kv.put(KEYS.worker("w1"), b"")
    route, sent = router(kv)
    route.view.recheck_s, route.view.stale_s = 0.1, 0.2
    assert route.send(calls(1)) == []
    kv.delete(KEYS.worker("w1"))
    time.sleep(0.3)  # idle: the look is old, and no refresh is under way
    assert route.send(calls(1)) == calls(1), "handed back unsent: NO_RESOURCES"
    kv.put(KEYS.worker("w1"), b"")
    assert route.send(calls(1)) == [], "a worker again"
    route.view.recheck_s = 0.0  # every look is due at once
    kv.armed = True  # etcd hangs from now on
    assert route.send(calls(1)) == [], "goes out; the refresher looks (and hangs)"
    time.sleep(0.3)  # the last look is old now, and the refresher's still hangs
    caller = threading.Thread(target=lambda: route.send(calls(1)))
    caller.start()
    caller.join(3)
    hung = caller.is_alive()
    route.close()
    kv.gate.set()
    assert not hung, "the call waited for etcd"
    assert len(sent) == 4
