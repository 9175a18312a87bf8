"""Fixtures that yield real services: RabbitMQ and etcd, and Droplet clusters on top of them.

One switch, DROPLET_TEST_SERVICES:
  containers  testcontainers start RabbitMQ and etcd (the default where a Docker engine answers)
  local       reuse RabbitMQ on 127.0.0.1:5672 (or start rabbitmq-server), and start a private
              etcd on a free port (the default otherwise)
  external    use DROPLET_BROKER_URL and DROPLET_ETCD as they are
Every test gets its own namespace, so queues and keys never leak between tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import DEFAULT_BROKER_URL, Settings

ROOT = Path(__file__).resolve().parent.parent


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
    from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]
    from testcontainers.core.waiting_utils import wait_for_logs  # type: ignore[import-untyped]
    from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-untyped]

    with RabbitMqContainer("rabbitmq:3.13") as rabbit:
        etcd = (
            DockerContainer("quay.io/coreos/etcd:v3.5.15")
            .with_command(
                "etcd --listen-client-urls http://0.0.0.0:2379 "
                "--advertise-client-urls http://0.0.0.0:2379"
            )
            .with_exposed_ports(2379)
        )
        with etcd:
            wait_for_logs(etcd, "ready to serve client requests", timeout=60)
            host = rabbit.get_container_host_ip()
            url = f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}/%2F"
            endpoint = f"{etcd.get_container_host_ip()}:{etcd.get_exposed_port(2379)}"
            yield Services("containers", url, endpoint)


@pytest.fixture
def settings(services: Services) -> Settings:
    return services.settings()


# -- clusters of real processes -------------------------------------------------------------


class Cluster:
    """A scheduler and workers as real `droplet` processes on the test's namespace."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.schedulers: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def _env(self) -> dict[str, str]:
        """The test's settings, as the environment of the processes (DROPLET_<FIELD>)."""
        import dataclasses

        env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
        env["PYTHONUNBUFFERED"] = "1"
        for setting in dataclasses.fields(self.settings):
            value = getattr(self.settings, setting.name)
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[f"DROPLET_{setting.name.upper()}"] = text
        return env

    def _spawn(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        index = len(self.schedulers) + len(self.workers)
        log = open(self.log_dir / f"{role}-{index}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "droplet.cli.main", role, *args],
            env=self._env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        log.close()
        return proc

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        proc = self._spawn("scheduler")
        self.schedulers.append(proc)
        return proc

    def start_worker(self, worker_id: str | None = None) -> subprocess.Popen[bytes]:
        proc = self._spawn("worker", *(["--id", worker_id] if worker_id else []))
        self.workers.append(proc)
        return proc

    def worker_ids(self) -> list[str]:
        """Default ids of the workers started so far (<host>-<pid>)."""
        import socket

        return [f"{socket.gethostname()}-{p.pid}" for p in self.workers]

    def wait_ready(self, workers: int, timeout_s: float = 30.0) -> None:
        from droplet.runtime import open_kv
        from droplet.signing import Signer
        from droplet.store.metadata import Metadata

        kv = open_kv(self.settings)
        md = Metadata(kv, self.settings, Signer(None))
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                dead = [p for p in self.schedulers + self.workers if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a cluster process exited; logs in {self.log_dir}")
                if len(md.workers()) >= workers and len(md.schedulers()) >= len(self.schedulers):
                    return
                time.sleep(0.05)
            raise TimeoutError(f"cluster not ready in {timeout_s}s; logs in {self.log_dir}")
        finally:
            kv.close()

    def stop(self) -> None:
        procs = self.schedulers + self.workers
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def start_cluster(settings: Settings, log_dir: Path, workers: int = 2,
                  schedulers: int = 1) -> Cluster:
    cluster = Cluster(settings, log_dir)
    for _ in range(schedulers):
        cluster.start_scheduler()
    for _ in range(workers):
        cluster.start_worker()
    try:
        cluster.wait_ready(workers)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def purge_namespace(settings: Settings, worker_ids: list[str] | None = None) -> None:
    """Deletes a test namespace's queues and keys."""
    from droplet.broker_config.names import QueueNames
    from droplet.runtime import broker_factory, open_kv

    kv = open_kv(settings)
    try:
        kv.delete(settings.etcd_prefix, prefix=True)
    finally:
        kv.close()
    names = QueueNames(settings.namespace)
    try:
        conn = broker_factory(settings, "droplet-test-cleanup")()
    except Exception:
        return
    try:
        queues = [names.calls, names.admin, names.work, names.dead]
        for worker in worker_ids or []:
            queues += [names.worker(worker), names.inbox(worker)]
        for queue in queues:
            conn.delete_queue(queue)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def module_cluster(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two workers and a scheduler shared by one test module (tests use unique names)."""
    settings = services.settings(worker_lease_ttl_s=3, status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path_factory.mktemp("cluster"), workers=2)
    yield cluster
    cluster.stop()
    purge_namespace(settings, cluster.worker_ids())


@pytest.fixture
def client(module_cluster: Cluster) -> Iterator[object]:
    import droplet

    c = droplet.connect(settings=module_cluster.settings)
    yield c
    c.close()


@pytest.fixture
def unique() -> str:
    """A fresh name for functions, DAGs and keys of one test."""
    return f"u{uuid.uuid4().hex[:8]}"
