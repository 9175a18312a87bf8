"""Resource tags end to end: a `droplet up --workers 1 --tagged-worker gpu=1,mem=16` cluster
(real processes, RabbitMQ, etcd). Calls and DAG functions that need tags run only on the
tagged worker; what no live worker has is answered NO_RESOURCES at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.status import collect
from droplet.settings import Settings
from tests.conftest import ROOT, Services, purge_namespace

pytestmark = [pytest.mark.e2e]


def _where(lib: Any, x: Any) -> str:
    import time as t

    t.sleep(0.01)  # long enough that a burst spreads over every worker that may take it
    return str(lib.getid())


@pytest.fixture(scope="module")
def up_cluster(services: Services, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Settings]:
    """`droplet up` with one plain and one tagged worker; yields the clients' settings."""
    state = tmp_path_factory.mktemp("state")
    settings = services.settings(worker_lease_ttl_s=2, status_interval_s=0.5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env.update(DROPLET_BROKER_URL=settings.broker_url, DROPLET_ETCD=settings.etcd_endpoints[0],
               DROPLET_NAMESPACE=settings.namespace, DROPLET_WORKER_LEASE_TTL_S="2",
               DROPLET_STATUS_INTERVAL_S="0.5", XDG_STATE_HOME=str(state))
    up = subprocess.Popen(
        [sys.executable, "-m", "droplet.cli.main", "up", "--workers", "1",
         "--tagged-worker", "gpu=1,mem=16"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    settings = settings.with_(signing_key_file=str(Path(state) / "droplet" / "fleet.key"))
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        assert "ready" in line and "1 tagged" in line, line
        yield settings.with_secret_file()
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
        purge_namespace(settings.with_secret_file())


@pytest.fixture
def rclient(up_cluster: Settings) -> Iterator[Any]:
    with droplet.connect(settings=up_cluster) as client:
        yield client


def _tagged_and_plain(settings: Settings) -> tuple[str, str]:
    workers = collect(settings)["workers"]
    tagged = [w["id"] for w in workers if w.get("resources")]
    plain = [w["id"] for w in workers if not w.get("resources")]
    assert len(tagged) == 1 and len(plain) == 1, workers
    assert [w["resources"] for w in workers if w.get("resources")] == [
        {"gpu": 1.0, "mem": 16.0}], "the tags are in the membership record"
    return tagged[0], plain[0]


def test_calls_needing_tags_run_only_on_the_tagged_worker(rclient: Any, up_cluster: Settings,
                                                         unique: str) -> None:
    tagged, plain = _tagged_and_plain(up_cluster)
    anywhere = rclient.register(_where, unique + "-any")
    gpu = rclient.register(_where, unique + "-gpu", resources={"gpu": 1})
    # The control: untagged calls do reach the plain worker (so the test below can fail).
    assert set(f.get(timeout=30) for f in [anywhere(i) for i in range(60)]) == {tagged, plain}
    ran_on = [f.get(timeout=30) for f in [gpu(i) for i in range(60)]]
    assert set(ran_on) == {tagged}, "never on the untagged worker"
    # Per call, and a lesser amount of a tag the worker has more of.
    per_call = [anywhere.with_resources({"mem": 8})(i) for i in range(30)]
    assert {f.get(timeout=30) for f in per_call} == {tagged}
    by_submit = [rclient.submit(unique + "-any", [i], resources={"gpu": 1}) for i in range(30)]
    assert {f.get(timeout=30) for f in by_submit} == {tagged}
    later = [anywhere.with_resources({"gpu": 1}).call_later(0.2, i) for i in range(10)]
    assert {f.get(timeout=30) for f in later} == {tagged}, "delayed calls keep their needs"


def test_a_call_by_name_of_a_tagged_function_still_runs_only_on_the_tagged_worker(
        rclient: Any, up_cluster: Settings, unique: str) -> None:
    """The client does not know the needs of a function called by name: a worker without the
    tags sends the call back to the schedulers, which place it on the tagged worker."""
    tagged, _plain = _tagged_and_plain(up_cluster)
    rclient.register(_where, unique, resources={"gpu": 1})
    futures = [rclient.call(unique, i) for i in range(60)]
    assert {f.get(timeout=30) for f in futures} == {tagged}


def test_no_resources_when_no_live_worker_has_the_tags(rclient: Any, unique: str) -> None:
    tpu = rclient.register(_where, unique + "-tpu", resources={"tpu": 1})
    big = rclient.register(_where, unique + "-big", resources={"mem": 32})
    for future in (tpu(1), big(1), rclient.call(unique + "-tpu", 1),
                   rclient.register(_where, unique + "-x").with_resources({"gpu": 2})(1)):
        started = time.monotonic()
        with pytest.raises(droplet.NoResourcesError) as raised:
            future.get(timeout=20)
        assert raised.value.code == droplet.NO_RESOURCES
        print(f"NO_RESOURCES after {time.monotonic() - started:.3f}s: {raised.value}")


def test_a_dag_with_gpu_functions_pins_them_only_on_the_gpu_worker(
        rclient: Any, up_cluster: Settings, unique: str) -> None:
    tagged, plain = _tagged_and_plain(up_cluster)
    rclient.register(_where, unique + "-a")
    rclient.register(lambda lib, up: [up, str(lib.getid())], unique + "-b")
    for attempt in range(3):  # pins are chosen at random among the workers that qualify
        name = f"{unique}-d{attempt}"
        assert rclient.register_dag(name, [unique + "-a", unique + "-b"],
                                    [(unique + "-a", unique + "-b")],
                                    gpu_functions=[unique + "-b"]) == (True, None)
        pins = {w["pinned"]: w["id"] for w in collect(up_cluster)["workers"] if w["pinned"]}
        assert pins == {f"{name}/{unique}-b": tagged, f"{name}/{unique}-a": plain}
        assert rclient.call_dag(name, {unique + "-a": [1], unique + "-b": []},
                                direct_response=True, timeout=30) == [plain, tagged]
        assert rclient.delete_dag(name) == (True, None)
    # Two gpu functions and one gpu worker: NO_RESOURCES, and nothing left pinned.
    assert rclient.register_dag(unique + "-two", [unique + "-a", unique + "-b"],
                                [(unique + "-a", unique + "-b")],
                                gpu_functions=[unique + "-a", unique + "-b"]) == (
        False, droplet.NO_RESOURCES)
    deadline = time.monotonic() + 10
    while any(w["pinned"] for w in collect(up_cluster)["workers"]):
        assert time.monotonic() < deadline, "the half-made DAG's pin was rolled back"
        time.sleep(0.1)


def test_the_resources_and_batching_example_runs(up_cluster: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env.update(DROPLET_BROKER_URL=up_cluster.broker_url, DROPLET_ETCD=up_cluster.etcd_endpoints[0],
               DROPLET_NAMESPACE=up_cluster.namespace, DROPLET_LOCAL_FLEET_SECRET="false",
               DROPLET_SIGNING_KEY_FILE=str(up_cluster.signing_key_file))
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "resources_batching.py")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    print(run.stdout)
    assert "needs tpu=1           -> NO_RESOURCES" in run.stdout
    assert "register_dag          -> (True, None)" in run.stdout
    assert "DAG results           -> [0.5, 1.0, 1.5, 2.0, 2.5] ..." in run.stdout


@pytest.fixture
def two_gpu_workers(services: Services, tmp_path: Path) -> Iterator[Any]:
    """A scheduler and two workers tagged gpu=1, as real processes; yields a client."""
    from droplet.cli.cluster import LocalCluster

    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = LocalCluster(settings, tmp_path)
    cluster.start_scheduler()
    for _ in range(2):
        cluster.start_worker(resources="gpu=1")
    try:
        cluster.wait_ready(2, 30)
        with droplet.connect(settings=settings) as client:
            yield client
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_a_tagged_call_goes_to_an_idle_tagged_worker_not_a_busy_one(two_gpu_workers: Any,
                                                                     unique: str) -> None:
    client = two_gpu_workers

    def slow(lib: Any, seconds: float) -> str:
        import time as t

        t.sleep(seconds)
        return str(lib.getid())

    busy = client.register(slow, unique + "-slow", resources={"gpu": 1})
    quick = client.register(_where, unique + "-quick", resources={"gpu": 1})
    long_call = busy(8.0)
    client.batcher.flush()
    deadline = time.monotonic() + 10
    while not any(w["queue_depth"] for w in collect(client.settings)["workers"]):
        assert time.monotonic() < deadline, "the long call never showed as running"
        time.sleep(0.1)
    ran_on = {f.get(timeout=30) for f in [quick(i) for i in range(5)]}
    assert not long_call.done(), "the quick calls did not wait for the busy worker"
    assert len(ran_on) == 1 and long_call.get(timeout=30) not in ran_on, \
        "every quick call went to the idle worker"


@pytest.mark.fault
def test_droplet_up_replaces_a_killed_tagged_worker_with_a_tagged_one(
        rclient: Any, up_cluster: Settings, unique: str) -> None:
    """Last in this file: it kills the cluster's tagged worker."""
    tagged, _plain = _tagged_and_plain(up_cluster)
    pid = next(w["pid"] for w in collect(up_cluster)["workers"] if w["id"] == tagged)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 40
    while True:
        workers = collect(up_cluster)["workers"]
        now_tagged = [w["id"] for w in workers if w.get("resources") and w["id"] != tagged]
        if now_tagged and tagged not in {w["id"] for w in workers if w["alive"]}:
            break
        assert time.monotonic() < deadline, f"no tagged replacement: {workers}"
        time.sleep(0.2)
    gpu = rclient.register(_where, unique, resources={"gpu": 1})
    assert {f.get(timeout=30) for f in [gpu(i) for i in range(20)]} == set(now_tagged)
    print(f"tagged worker {tagged} killed; droplet up started {now_tagged[0]} with its tags")
