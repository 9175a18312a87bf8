"""What operators see: `droplet status`, Prometheus metrics, `droplet up` supervision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

import droplet
from droplet.cli.etcd_local import free_port
from tests.conftest import ROOT, Services, purge_namespace, start_cluster

pytestmark = pytest.mark.e2e


def _status(settings: Any) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "droplet.cli.main", "--broker-url", settings.broker_url,
         "--etcd", settings.etcd_endpoints[0], "--namespace", settings.namespace,
         "status", "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _frozen_objects(scraped: str) -> list[float]:
    return [float(line.split()[-1]) for line in scraped.splitlines()
            if line.startswith("droplet_gc_frozen_objects ")]


def test_status_and_metrics_show_the_fleet_and_its_work(
    services: Services, tmp_path: Any, unique: str
) -> None:
    settings = services.settings(metrics_port=free_port(), status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path, workers=2)
    try:
        with droplet.connect(settings=settings) as c:
            c.register(lambda lib, x: x + 1, unique)
            assert [c.call(unique, i).get(timeout=10) for i in range(20)] == list(range(1, 21))
            with pytest.raises(droplet.ExecutionError):
                c.register(lambda lib: 1 / 0, unique + "-bad")().get(timeout=10)
            c.register(lambda lib, x: x, unique + "-b")
            assert c.register_dag(unique + "-dag", [unique, unique + "-b"],
                                  [(unique, unique + "-b")]) == (True, None)
            pinned = sorted([f"{unique}-dag/{unique}", f"{unique}-dag/{unique}-b"])
            deadline = time.monotonic() + 15  # (statuses every 0.5 s; later on a crowded host)
            while True:
                report = _status(settings)
                seen = report.get("workers", [])
                if time.monotonic() > deadline or (
                        sorted(w.get("pinned") for w in seen) == pinned
                        and sum(w.get("calls_total", 0) for w in seen) >= 21):
                    break
                time.sleep(0.25)
        assert {"schedulers", "workers", "dags", "functions", "queues"} <= set(report)
        assert len(report["schedulers"]) == 1
        workers = report["workers"]
        assert len(workers) == 2
        for w in workers:
            assert {"id", "host", "pid", "alive", "pinned"} <= set(w) and w["alive"]
        assert sorted(w["pinned"] for w in workers) == pinned
        assert [d["name"] for d in report["dags"]] == [unique + "-dag"]
        assert unique in report["functions"]
        assert report["queues"][f"{settings.namespace}.work"] == 0
        assert sum(w["calls_total"] for w in workers) >= 21

        scraped = "".join(_scrape(w["metrics_port"]) for w in workers)
        runs = [line for line in scraped.splitlines()
                if line.startswith("droplet_function_seconds_count") and f'"{unique}"' in line]
        assert sum(float(line.split()[-1]) for line in runs) == 20
        assert 'droplet_errors_total{code="EXECUTION_ERROR",role="worker"} 1.0' in scraped
        frozen = _frozen_objects(scraped)
        assert len(frozen) == 2 and min(frozen) > 20_000, (
            f"each worker set its start-up objects aside from full collections: {frozen}"
        )
        assert scraped.count('droplet_gc_collections_total{generation="0"}') == 2
        (scheduler,) = report["schedulers"]
        frozen_there = _frozen_objects(_scrape(scheduler["metrics_port"]))
        assert len(frozen_there) == 1 and frozen_there[0] > 20_000, (
            f"the scheduler set its start-up objects aside too: {frozen_there}"
        )
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_droplet_up_replaces_a_worker_that_dies(services: Services, tmp_path: Any) -> None:
    """...and runs signed: with no secret configured it makes one in its state directory,
    readable by its user only, where clients on the machine find it."""
    settings = services.settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env.update(DROPLET_BROKER_URL=settings.broker_url, DROPLET_ETCD=settings.etcd_endpoints[0],
               DROPLET_NAMESPACE=settings.namespace, DROPLET_WORKER_LEASE_TTL_S="2",
               XDG_STATE_HOME=str(tmp_path))
    up = subprocess.Popen(
        [sys.executable, "-m", "droplet.cli.main", "up", "--workers", "2"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert up.stdout is not None
        assert "ready" in up.stdout.readline()
        secret = tmp_path / "droplet" / "fleet.key"
        assert secret.stat().st_mode & 0o777 == 0o600
        settings = settings.with_(signing_key_file=str(secret)).with_secret_file()
        unsigned = services.settings(namespace=settings.namespace)
        with droplet.connect(settings=unsigned) as outsider, pytest.raises(
            droplet.UnauthorizedError
        ):
            outsider.call("anything").get(timeout=10)
        before = {w["id"]: w["pid"] for w in _status(settings)["workers"]}
        assert len(before) == 2
        victim = sorted(before.values())[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            pids = {w["pid"] for w in _status(settings)["workers"]}
            if len(pids) == 2 and victim not in pids:
                break
            assert time.monotonic() < deadline, f"not replaced: {pids}"
            time.sleep(0.5)
        with droplet.connect(settings=settings) as c:
            assert c.register(lambda lib: "still serving", "up-check")().get(timeout=10)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            out, _ = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            out = ""
        purge_namespace(settings)
    assert "stopped" in out


def test_droplet_up_starts_and_stops_an_embedded_etcd(services: Services, tmp_path: Any) -> None:
    from droplet.cli.etcd_local import etcd_answers

    endpoint = f"127.0.0.1:{free_port()}"
    assert not etcd_answers(endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env.update(DROPLET_BROKER_URL=services.broker_url, DROPLET_ETCD=endpoint,
               DROPLET_NAMESPACE=f"embedded{os.getpid()}")
    up = subprocess.Popen(
        [sys.executable, "-m", "droplet.cli.main", "up", "--workers", "1",
         "--state-dir", str(tmp_path)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert up.stdout is not None
        assert "ready" in up.stdout.readline()
        assert etcd_answers(endpoint), "an embedded etcd serves at the configured address"
        assert any(p.is_dir() for p in tmp_path.iterdir()), "its data is in the state dir"
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=30)
    assert up.returncode == 0
    assert not etcd_answers(endpoint), "Ctrl-C stopped the embedded etcd too"


def test_the_examples_run_against_a_cluster(services: Services, tmp_path: Any) -> None:
    settings = services.settings()
    cluster = start_cluster(settings, tmp_path, workers=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env.update(DROPLET_BROKER_URL=settings.broker_url, DROPLET_ETCD=settings.etcd_endpoints[0],
               DROPLET_NAMESPACE=settings.namespace, DROPLET_LOCAL_FLEET_SECRET="false")
    try:
        for example, expected in (("quickstart.py", "call_dag direct       -> 4"),
                                  ("stateful.py", "['hello', 'from', 'droplet']"),
                                  ("speculative_chains.py", "inc, sq, inc, sq      -> 25")):
            run = subprocess.run([sys.executable, str(ROOT / "examples" / example)], env=env,
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            assert expected in run.stdout
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())


def test_services_refuse_to_run_unsigned_against_a_broker_off_this_machine(
    services: Services, tmp_path: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env.update(DROPLET_BROKER_URL="amqp://guest:guest@192.0.2.10:5672/%2F",
               DROPLET_ETCD=services.etcd_endpoint, DROPLET_LOCAL_FLEET_SECRET="false")
    for role in ("scheduler", "worker"):
        run = subprocess.run([sys.executable, "-m", "droplet.cli.main", role], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert run.returncode == 1
        assert "refusing to run without a fleet secret against broker 192.0.2.10" in run.stderr
        assert "allow_unsigned" in run.stderr
