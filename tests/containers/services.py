"""RabbitMQ and etcd in containers for the tests (testcontainers, images from images.py).

Every container is named `droplet-test-<kind>-<random>` and labelled with the pid of the
process that made it; its ports are published on 127.0.0.1 only, at ports Docker picks (so
never the host's own 5672 or 25672). Ryuk, testcontainers' reaper, is an image from a
registry, so it is off: containers are removed by their context managers, and the ones a
killed test run left behind by `remove_leftovers()` at the next start.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from droplet.cli.etcd_local import COMPACTION_RETENTION, etcd_answers
from tests.containers.images import image

# Read when the first container starts: no reaper image to pull.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

PREFIX = "droplet-test-"
PID_LABEL = "droplet-test.pid"
RABBITMQ_PORT = 5672
ETCD_PORT = 2379


def etcd_command(name: str = "droplet", advertise: str = "http://127.0.0.1:2379") -> list[str]:
    """etcd's command line, good for the Debian image and the official ones alike."""
    return ["etcd", "--name", name, "--data-dir", "/tmp/etcd-data",
            "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", advertise,
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", COMPACTION_RETENTION,
            "--quota-backend-bytes", str(8 * 1024**3)]


def container(kind: str, *ports: int, command: list[str] | None = None,
              env: dict[str, str] | None = None, name: str = "", **kwargs: Any) -> Any:
    """A testcontainers DockerContainer of `image(kind)` (not started yet), each of `ports`
    published on 127.0.0.1 at a port Docker picks. `kwargs` go to Docker's create."""
    from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]

    made = DockerContainer(
        image(kind), command=command, env=env or {},
        name=name or f"{PREFIX}{kind}-{uuid.uuid4().hex[:8]}",
        labels={PID_LABEL: str(os.getpid())}, **kwargs,
    )
    for port in ports:
        made.ports[f"{port}/tcp"] = ("127.0.0.1", None)
    return made


def host_port(started: Any, port: int) -> int:
    return int(started.get_docker_client().port(started.get_container_id(), port))


def _logs_tail(started: Any) -> str:
    try:
        return str(started.get_wrapped_container().logs(tail=30).decode(errors="replace"))
    except Exception as exc:  # the container may be gone already
        return f"(no logs: {exc})"


def wait_until(started: Any, ready: Any, what: str, timeout_s: float) -> None:
    """Polls `ready()` until it is true; fails with the container's log tail when the
    container exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        wrapped = started.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise RuntimeError(f"{what} container exited:\n{_logs_tail(started)}")
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer within {timeout_s:g}s:\n{_logs_tail(started)}")


def amqp_answers(url: str) -> bool:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def rabbitmq_service(timeout_s: float = 120.0) -> Iterator[str]:
    """A RabbitMQ container; yields its AMQP URL (guest/guest, vhost /) on 127.0.0.1."""
    with container("rabbitmq", RABBITMQ_PORT) as started:
        url = f"amqp://guest:guest@127.0.0.1:{host_port(started, RABBITMQ_PORT)}/%2F"
        wait_until(started, lambda: amqp_answers(url), "RabbitMQ", timeout_s)
        yield url


@contextlib.contextmanager
def etcd_service(timeout_s: float = 60.0) -> Iterator[str]:
    """A one-member etcd container; yields its client endpoint host:port on 127.0.0.1."""
    with container("etcd", ETCD_PORT, command=etcd_command()) as started:
        endpoint = f"127.0.0.1:{host_port(started, ETCD_PORT)}"
        wait_until(started, lambda: etcd_answers(endpoint, 0.5), "etcd", timeout_s)
        yield endpoint


def remove_leftovers() -> list[str]:
    """Removes the droplet-test containers and networks whose making process no longer runs
    here (a test run that was killed); returns their names."""
    import docker  # type: ignore[import-untyped]

    client = docker.from_env()
    removed = []
    try:
        for found in client.containers.list(all=True, filters={"label": PID_LABEL}):
            pid = int(found.labels.get(PID_LABEL, "0") or 0)
            if not found.name.startswith(PREFIX) or pid <= 0 or _pid_runs(pid):
                continue
            with contextlib.suppress(Exception):
                found.remove(force=True)
                removed.append(found.name)
        # The cluster tests' own networks (tests/ha_containers.py), once their containers
        # are gone.
        for network in client.networks.list(filters={"label": PID_LABEL}):
            pid = int(network.attrs.get("Labels", {}).get(PID_LABEL, "0") or 0)
            if not network.name.startswith(PREFIX) or pid <= 0 or _pid_runs(pid):
                continue
            with contextlib.suppress(Exception):
                network.remove()
                removed.append(network.name)
    finally:
        client.close()
    return removed


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    """`python -m tests.containers.services`: starts a RabbitMQ and an etcd container, checks
    that both answer, removes them (what .ci/run checks before choosing containers mode)."""
    started = time.monotonic()
    remove_leftovers()
    with rabbitmq_service() as url, etcd_service() as endpoint:
        print(f"RabbitMQ {url} and etcd {endpoint} answered in "
              f"{time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
