"""Fixtures that yield real services: RabbitMQ and etcd, and Droplet clusters on top of them.

One switch, DROPLET_TEST_SERVICES:
  containers  testcontainers start RabbitMQ and etcd containers on 127.0.0.1 (the default where
              a Docker engine answers); tests/containers/images.py builds their images when
              missing
  local       reuse RabbitMQ on 127.0.0.1:5672 (or start rabbitmq-server), and start a private
              etcd on a free port (the default otherwise)
  external    use DROPLET_BROKER_URL and DROPLET_ETCD as they are
Every test gets its own namespace, so queues and keys never leak between tests.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import DEFAULT_BROKER_URL, Settings
from tests.worker_signals import worker_handlers  # noqa: F401  (a fixture, for every test)

ROOT = Path(__file__).resolve().parent.parent
# Tests configure every secret explicitly: no process they start may pick up the fleet secret
# a `droplet up` left on this machine.
os.environ["DROPLET_LOCAL_FLEET_SECRET"] = "false"


def _docker_answers() -> bool:
    """True when a Docker engine answers /_ping on its socket (or on DOCKER_HOST's tcp)."""
    import socket

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = host[len("unix://"):]
        elif host.startswith("tcp://"):
            name, _, port = host[len("tcp://"):].partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(target)  # type: ignore[arg-type]
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


def _mode() -> str:
    mode = os.environ.get("DROPLET_TEST_SERVICES", "")
    if mode:
        if mode not in ("containers", "local", "external"):
            raise pytest.UsageError(f"DROPLET_TEST_SERVICES={mode!r}: containers|local|external")
        return mode
    return "containers" if _docker_answers() else "local"


def pytest_collection_finish(session: pytest.Session) -> None:
    """In containers mode, builds the images the collected tests need before any test runs
    (a first build takes minutes, longer than one test's timeout)."""
    if not session.items or _mode() != "containers":
        return
    kinds = []
    # Fixtures reach `services` dynamically too (getfixturevalue): any test outside
    # tests/unit may need the services.
    if any("unit" not in item.path.parts[-3:] for item in session.items):
        kinds += ["rabbitmq", "etcd"]
    if any(item.get_closest_marker("worker_image") for item in session.items):
        kinds.append("worker")
    if not kinds:
        return
    from tests.containers.images import image

    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        try:
            for kind in kinds:
                image(kind)
        except Exception as exc:
            pytest.exit(f"containers mode: the {kind} image could not be made: {exc}\n"
                        "Run with DROPLET_TEST_SERVICES=local, or name images with "
                        "DROPLET_TEST_RABBITMQ_IMAGE / DROPLET_TEST_ETCD_IMAGE.", returncode=4)


@dataclass
class Services:
    mode: str
    broker_url: str
    etcd_endpoint: str
    etcd: LocalEtcd | None = None
    _stack: list[object] = field(default_factory=list)

    def settings(self, **overrides: object) -> Settings:
        namespace = overrides.pop("namespace", None) or f"t{uuid.uuid4().hex[:10]}"
        return Settings(
            broker_url=self.broker_url,
            etcd_endpoints=(self.etcd_endpoint,),
            namespace=str(namespace),
            **overrides,  # type: ignore[arg-type]
        )


def _broker_answers(url: str) -> bool:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    mode = _mode()
    if mode == "external":
        yield Services(mode, os.environ.get("DROPLET_BROKER_URL", DEFAULT_BROKER_URL),
                       os.environ.get("DROPLET_ETCD", "127.0.0.1:2379"))
        return
    if mode == "containers":
        yield from _container_services()
        return
    if not _broker_answers(DEFAULT_BROKER_URL):
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_rabbitmq.sh")], check=True)
    etcd = LocalEtcd(tmp_path_factory.mktemp("etcd") / "data").start()
    try:
        yield Services(mode, DEFAULT_BROKER_URL, etcd.endpoint, etcd)
    finally:
        etcd.stop()


def _container_services() -> Iterator[Services]:
    """RabbitMQ and etcd containers on 127.0.0.1 (tests/containers; images built when
    missing, or the ones DROPLET_TEST_RABBITMQ_IMAGE / DROPLET_TEST_ETCD_IMAGE name)."""
    from tests.containers.services import etcd_service, rabbitmq_service, remove_leftovers

    remove_leftovers()
    with rabbitmq_service() as url, etcd_service() as endpoint:
        yield Services("containers", url, endpoint)


@pytest.fixture
def settings(services: Services) -> Settings:
    return services.settings()


# -- clusters of real processes -------------------------------------------------------------

Cluster = LocalCluster


def start_cluster(settings: Settings, log_dir: Path, workers: int = 2,
                  schedulers: int = 1) -> Cluster:
    """A scheduler and workers as real `droplet` processes on the test's namespace, with a
    temporary directory of their own: their run slots (worker/slots.py) are not shared with
    every other droplet worker of this user on the host (other tests, other checkouts)."""
    own_tmp = log_dir / "tmp"
    own_tmp.mkdir(exist_ok=True)
    cluster = Cluster(settings, log_dir, env={"TMPDIR": str(own_tmp)}).start(workers, schedulers)
    try:
        cluster.wait_ready(workers, timeout_s=30)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cluster_fixture(workers: int, scope: str = "module", **overrides: Any) -> Any:
    """A fixture yielding a cluster of `workers` workers with these settings, cleaned up."""

    @pytest.fixture(scope=scope)  # type: ignore[misc]
    def cluster(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
        settings = services.settings(**overrides)
        started = start_cluster(settings, tmp_path_factory.mktemp("cluster"), workers)
        yield started
        started.stop()
        purge_namespace(settings, started.worker_ids())

    return cluster


def client_fixture(cluster_name: str) -> Any:
    """A fixture yielding a client connected to the named cluster fixture."""

    @pytest.fixture
    def client(request: pytest.FixtureRequest) -> Iterator[Any]:
        import droplet

        cluster = request.getfixturevalue(cluster_name)
        with droplet.connect(settings=cluster.settings) as connected:
            yield connected

    return client


module_cluster = cluster_fixture(workers=2, worker_lease_ttl_s=3, status_interval_s=0.5)
client = client_fixture("module_cluster")


@pytest.fixture
def unique() -> str:
    """A fresh name for functions, DAGs and keys of one test."""
    return f"u{uuid.uuid4().hex[:8]}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The cluster tests' figures (tests/ha_backend.py report()), shown even without -s."""
    from tests.ha_backend import FIGURES

    if FIGURES:
        terminalreporter.section("cluster figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
