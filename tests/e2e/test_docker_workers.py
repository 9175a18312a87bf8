"""The documented Docker deployment, for real: deploy/docker/run-workers.sh runs a scheduler
and workers as containers of the worker image (deploy/docker/Dockerfile), configured by an
environment file; calls run on them, worker ids are <host>-<slot>, and a worker whose
process dies is restarted by Docker (restart policy) and serves again.

Containers mode only (the worker image is built before the tests there); the containers use
the host's network, so they reach the RabbitMQ and etcd containers where the tests do.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

import droplet
from droplet.cli.cluster import purge_namespace
from droplet.runtime import open_kv
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.metadata import Metadata
from tests.conftest import ROOT, Services

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.worker_image]
SCRIPT = ROOT / "deploy" / "docker" / "run-workers.sh"


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()


def _worker_ids(settings: Settings) -> list[str]:
    with closing(open_kv(settings)) as kv:
        metadata = Metadata(kv, settings, Signer(settings.signing_key))
        return sorted(worker.id for worker in metadata.workers())


def _until(condition: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s:g}s: {what}")


@pytest.fixture
def fleet(services: Services, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    if services.mode != "containers":
        pytest.skip("runs the worker image: containers mode only (DROPLET_TEST_SERVICES)")
    from tests.containers.images import image

    settings = services.settings(signing_key=secrets.token_urlsafe(32), worker_lease_ttl_s=3,
                                 status_interval_s=0.5)
    env_file = tmp_path / "droplet.env"
    env_file.write_text(
        f"DROPLET_BROKER_URL={settings.broker_url}\n"
        f"DROPLET_ETCD={','.join(settings.etcd_endpoints)}\n"
        f"DROPLET_NAMESPACE={settings.namespace}\n"
        f"DROPLET_SIGNING_KEY={settings.signing_key}\n"
        "DROPLET_WORKER_LEASE_TTL_S=3\nDROPLET_STATUS_INTERVAL_S=0.5\n"
    )
    prefix = f"droplet-test-w{uuid.uuid4().hex[:8]}"
    base = ["bash", str(SCRIPT), "--image", image("worker"), "--name", prefix,
            "--env-file", str(env_file), "--stop-timeout", "10"]
    try:
        started = subprocess.run([*base, "-n", "2", "--scheduler"], capture_output=True,
                                 text=True, timeout=120, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        yield settings, prefix
    finally:
        subprocess.run([*base, "--remove"], capture_output=True, timeout=120, check=False)
        purge_namespace(settings, [f"{socket.gethostname()}-{slot}" for slot in (1, 2)])


def test_workers_in_containers_serve_calls_and_come_back_after_dying(
        fleet: tuple[Settings, str]) -> None:
    settings, prefix = fleet
    host = socket.gethostname()
    expected = [f"{host}-1", f"{host}-2"]
    _until(lambda: _worker_ids(settings) == expected, f"workers {expected} registered")
    name = f"u{uuid.uuid4().hex[:8]}"
    with droplet.connect(settings=settings) as client:
        def whoami(lib: object, i: int) -> tuple[int, str]:
            import os as o

            return i * 2, o.environ.get("HOSTNAME", "") + "/" + str(o.getpid())

        client.register(whoami, name)
        results = [f.get(timeout=60) for f in [client.call(name, i) for i in range(40)]]
        assert [r[0] for r in results] == [i * 2 for i in range(40)]
        assert all(r[1].endswith("/1") for r in results), "ran as PID 1 of a container"

        # The worker process of slot 1 dies (as after an OOM kill): Docker starts it again.
        pid = int(_docker("inspect", "-f", "{{.State.Pid}}", f"{prefix}-1"))
        os.kill(pid, signal.SIGKILL)
        _until(lambda: _docker("inspect", "-f", "{{.RestartCount}}", f"{prefix}-1") == "1",
               "Docker restarted the killed worker")
        _until(lambda: _docker("inspect", "-f", "{{.State.Running}}", f"{prefix}-1") == "true",
               "the restarted worker runs")
        assert int(_docker("inspect", "-f", "{{.State.Pid}}", f"{prefix}-1")) != pid
        _until(lambda: _worker_ids(settings) == expected, "both workers in the fleet again")
        again = [client.call(name, i) for i in range(40)]
        assert [f.get(timeout=60)[0] for f in again] == [i * 2 for i in range(40)]
        print(f"2 workers and a scheduler in containers: 80 calls answered, slot 1 killed and "
              f"restarted by Docker, back as {expected[0]}")
