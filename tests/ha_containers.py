"""The cluster tests' services in containers (containers mode): a 3-node RabbitMQ cluster and a
3-member etcd cluster of the test images, and the scheduler and workers as containers of the
worker image, all on a Docker network of the test's own; the client is the test process.

* The network, `droplet-test-ha<id>`, is made here and removed at the end; every container is
  `droplet-test-ha<id>-<role>`, labelled like tests/containers/services.py's so a killed run's
  leftovers are removed by the next run (`remove_leftovers`).
* The nodes reach each other, and the fleet reaches them, by container name on that network;
  the fleet is configured by environment (DROPLET_*), as deploy/docker documents.
* The client reaches each node at a port published on 127.0.0.1, picked here (never 5672 or
  25672, the host's RabbitMQ): a port Docker picked would change when a killed container is
  started again, and the client's broker_url names it.
* RabbitMQ nodes share a fresh Erlang cookie and are clustered with `rabbitmqctl join_cluster`
  (deterministic, where peer discovery races when all nodes boot at once); etcd members are
  one `--initial-cluster`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from droplet.cli.cluster import child_env
from droplet.cli.etcd_local import etcd_answers
from droplet.settings import Settings
from tests.containers.images import image
from tests.containers.services import PID_LABEL, PREFIX, amqp_answers, etcd_command
from tests.ha_backend import in_parallel, leader_among

HOST_RABBIT_PORTS = (5672, 25672)  # the machine's own RabbitMQ: never published on
# Writes the cluster's cookie where RabbitMQ and rabbitmqctl (docker exec) read it, then runs
# the node in the foreground (Debian's image, or an official one's rabbitmq-server on PATH).
RABBIT_START = (
    'chmod 600 "$HOME/.erlang.cookie" 2>/dev/null; '
    'printf %s "$DROPLET_TEST_COOKIE" > "$HOME/.erlang.cookie"; '
    'chmod 400 "$HOME/.erlang.cookie"; '
    "if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then "
    "exec /usr/lib/rabbitmq/bin/rabbitmq-server; fi; exec rabbitmq-server"
)


def _host_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range: a killed node's port stays free
    for its return, where an outgoing connection could take an ephemeral one meanwhile."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(low, 10001))
        if port in HOST_RABBIT_PORTS:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 between 10000 and {low}")


def _until(ready: Callable[[], bool], what: str, timeout_s: float,
           container: Any = None) -> float:
    """Polls until ready() (seconds taken); fails with the container's log tail when it exits
    or the time is up."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if ready():
            return time.monotonic() - started
        if container is not None:
            container.reload()
            if container.status in ("exited", "dead"):
                raise RuntimeError(f"{what}: the container exited:\n{_tail(container)}")
        time.sleep(0.3)
    raise RuntimeError(f"{what}: not within {timeout_s:g} s\n"
                       f"{_tail(container) if container is not None else ''}")


def _tail(container: Any, lines: int = 40) -> str:
    try:
        return str(container.logs(tail=lines).decode(errors="replace"))
    except Exception as exc:  # gone already
        return f"(no logs: {exc})"


def _ipv4(host: object) -> str:
    """rabbitmqctl's JSON gives an address as Erlang's tuple: 4 bytes, or 8 16-bit groups
    (IPv4-mapped IPv6, ::ffff:a.b.c.d, when the node listens on both families)."""
    if isinstance(host, list) and len(host) == 4:
        return ".".join(str(part) for part in host)
    if isinstance(host, list) and len(host) == 8 and host[5] == 0xFFFF:
        return ".".join(str(part) for part in (host[6] >> 8, host[6] & 255,
                                                host[7] >> 8, host[7] & 255))
    return str(host)


class ContainerNode:
    """A RabbitMQ node or an etcd member in its container (tests/ha_backend.py's Node)."""

    def __init__(self, name: str, address: str, container: Any,
                 ready: Callable[[], bool], before_stop: Callable[[], None] | None = None,
                 ) -> None:
        self.name = name
        self.address = address
        self.container = container
        self._ready = ready
        self._before_stop = before_stop

    def kill(self) -> None:
        self.container.kill()

    def start(self) -> None:
        self.container.start()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 120) -> None:
        _until(self._ready, f"{self.container.name} serving", timeout_s, self.container)

    def restart(self) -> None:
        if self._before_stop is not None:
            self._before_stop()
        self.container.stop(timeout=60)
        self.start()

    def exec(self, *argv: str) -> str:
        """A command in the container (as its user); its output, or an error with it."""
        code, output = self.container.exec_run(list(argv))
        text = output.decode(errors="replace")
        if code != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.container.name} failed ({code}):"
                               f"\n{text[-2000:]}")
        return str(text)


class ContainerFleet:
    """A scheduler and workers as containers of the worker image (tests/ha_backend.py's
    Fleet); cut() disconnects a worker's container from the network."""

    def __init__(self, backend: ContainerHa, settings: Settings, log_dir: Path,
                 workers: int) -> None:
        self.backend = backend
        self.settings = settings
        self.log_dir = log_dir
        fleet = settings.with_(broker_url=",".join(backend.inner_broker_urls),
                               etcd_endpoints=tuple(backend.inner_etcd_endpoints))
        env = {k: v for k, v in child_env(fleet).items() if k.startswith("DROPLET_")}
        tag = uuid.uuid4().hex[:4]
        self.containers: list[Any] = []
        try:
            self.containers.append(backend.run(image("worker"), f"scheduler-{tag}",
                                               ["--log-level", "INFO", "scheduler"], env))
            self.workers = [
                backend.run(image("worker"), f"worker{i}-{tag}",
                            ["--log-level", "INFO", "worker", "--id", f"ha-{tag}-w{i}"], env)
                for i in range(1, workers + 1)]
            self.containers += self.workers
            self._wait_ready(workers)
        except BaseException:
            self.stop()
            raise

    @property
    def worker_count(self) -> int:
        return len(self.workers)

    def _wait_ready(self, workers: int, timeout_s: float = 90) -> None:
        from contextlib import closing

        from droplet.errors import DropletError
        from droplet.runtime import open_kv
        from droplet.signing import Signer
        from droplet.store.metadata import Metadata

        with closing(open_kv(self.settings)) as kv:
            metadata = Metadata(kv, self.settings, Signer(self.settings.signing_key))

            def ready() -> bool:
                for container in self.containers:
                    container.reload()
                    if container.status != "running":
                        raise RuntimeError(f"{container.name} exited at start:\n"
                                           f"{_tail(container)}")
                try:
                    return (len(metadata.workers()) >= workers
                            and len(metadata.schedulers()) >= 1)
                except DropletError:
                    return False

            _until(ready, f"a scheduler and {workers} workers in containers", timeout_s)

    def cut(self, worker: int) -> str:
        self.backend.network.disconnect(self.workers[worker], force=True)
        return "worker container disconnected from the network (docker network disconnect)"

    def reconnect(self, worker: int) -> None:
        self.backend.network.connect(self.workers[worker])

    def running(self, worker: int) -> bool:
        self.workers[worker].reload()
        return bool(self.workers[worker].status == "running")

    def stop(self) -> None:
        """Keeps each container's log in log_dir, then removes the containers."""
        for container in self.containers:
            with contextlib.suppress(Exception):
                (self.log_dir / f"{container.name}.log").write_bytes(container.logs())
            with contextlib.suppress(Exception):
                container.remove(force=True)


class ContainerHa:
    """Both clusters in containers (tests/ha_backend.py's HaBackend)."""

    kind = "containers"

    def __init__(self, size: int = 3) -> None:
        import docker  # type: ignore[import-untyped]

        self.size = size
        self.signing_key = secrets.token_urlsafe(32)
        self.docker = docker.from_env()
        self._fresh()

    def _fresh(self) -> None:
        """New names, cookie and (when started) ports; nothing started yet."""
        self.prefix = f"{PREFIX}ha{uuid.uuid4().hex[:6]}"
        self.cookie = secrets.token_hex(16).upper()
        self.network: Any = None
        self.containers: list[Any] = []
        self.rabbit_nodes: list[ContainerNode] = []
        self.etcd_members: list[ContainerNode] = []
        self.inner_broker_urls: list[str] = []
        self.inner_etcd_endpoints: list[str] = []

    # -- start and stop ------------------------------------------------------------------

    def run(self, image_tag: str, role: str, command: list[str] | str,
            env: dict[str, str], ports: dict[str, tuple[str, int]] | None = None) -> Any:
        """Starts a container of this cluster on its network (named, labelled, removed by
        stop())."""
        name = f"{self.prefix}-{role}"
        container = self.docker.containers.run(
            image_tag, command, detach=True, name=name, hostname=name,
            network=self.network.name, environment=env, ports=ports or {},
            labels={PID_LABEL: str(os.getpid())})
        self.containers.append(container)
        return container

    # A port picked free may be taken before Docker binds it (another test session): then
    # the clusters start afresh, on other ports and names, at most _ATTEMPTS times.
    _ATTEMPTS = 2

    def start(self) -> ContainerHa:
        for attempt in range(1, self._ATTEMPTS + 1):
            try:
                self._start_once()
                return self
            except Exception:
                self._remove()
                if attempt == self._ATTEMPTS:
                    self.docker.close()
                    raise
                self._fresh()
            except BaseException:
                self.stop()
                raise
        return self

    def _start_once(self) -> None:
        self.network = self.docker.networks.create(
            self.prefix, driver="bridge", labels={PID_LABEL: str(os.getpid())})
        for i in range(1, self.size + 1):
            self._run_rabbit(i)
            self._run_etcd(i)
        in_parallel(*[node.wait_ready for node in self.rabbit_nodes + self.etcd_members])
        self._cluster_rabbit()

    def _run_rabbit(self, i: int) -> None:
        host = f"{self.prefix}-rabbit{i}"
        port = _host_port()
        container = self.run(image("rabbitmq"), f"rabbit{i}", ["sh", "-c", RABBIT_START],
                             {"DROPLET_TEST_COOKIE": self.cookie,
                              "RABBITMQ_NODENAME": f"rabbit@{host}"},
                             {"5672/tcp": ("127.0.0.1", port)})
        url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        node = ContainerNode(f"rabbit@{host}", url, container, lambda: amqp_answers(url))
        node._before_stop = lambda: self._await_quorum_plus_one(node)
        self.rabbit_nodes.append(node)
        self.inner_broker_urls.append(f"amqp://guest:guest@{host}:5672/%2F")

    def _run_etcd(self, i: int) -> None:
        host = f"{self.prefix}-etcd{i}"
        port = _host_port()
        peers = ",".join(f"e{n}=http://{self.prefix}-etcd{n}:2380"
                         for n in range(1, self.size + 1))
        command = [*etcd_command(f"e{i}", f"http://{host}:2379"),
                   "--listen-peer-urls", "http://0.0.0.0:2380",
                   "--initial-advertise-peer-urls", f"http://{host}:2380",
                   "--initial-cluster", peers, "--initial-cluster-state", "new",
                   "--initial-cluster-token", self.prefix]
        container = self.run(image("etcd"), f"etcd{i}", command, {},
                             {"2379/tcp": ("127.0.0.1", port)})
        endpoint = f"127.0.0.1:{port}"
        self.etcd_members.append(ContainerNode(
            f"e{i}", endpoint, container, lambda: etcd_answers(endpoint, 0.5)))
        self.inner_etcd_endpoints.append(f"{host}:2379")

    def _cluster_rabbit(self) -> None:
        seed = self.rabbit_nodes[0]
        for node in self.rabbit_nodes[1:]:
            node.exec("rabbitmqctl", "stop_app")
            node.exec("rabbitmqctl", "join_cluster", seed.name)
            node.exec("rabbitmqctl", "start_app")
        status = json.loads(seed.exec("rabbitmqctl", "-q", "cluster_status",
                                      "--formatter", "json"))
        running = sorted(status.get("running_nodes", []))
        expected = sorted(node.name for node in self.rabbit_nodes)
        if running != expected:
            raise RuntimeError(f"RabbitMQ cluster: running {running}, expected {expected}")

    def _await_quorum_plus_one(self, node: ContainerNode) -> None:
        """Before a node stops in a rolling upgrade: every quorum queue has a member more
        than its quorum online (RabbitMQ's documented upgrade step)."""
        node.exec("rabbitmq-upgrade", "await_online_quorum_plus_one", "-t", "120")

    def _remove(self) -> None:
        for container in self.containers:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        if self.network is not None:
            with contextlib.suppress(Exception):
                self.network.remove()

    def stop(self) -> None:
        self._remove()
        self.docker.close()

    # -- what the scenarios use ----------------------------------------------------------

    def settings(self, **overrides: object) -> Settings:
        return Settings(
            broker_url=",".join(node.address for node in self.rabbit_nodes),
            etcd_endpoints=tuple(member.address for member in self.etcd_members),
            namespace=f"h{uuid.uuid4().hex[:10]}",
            queue_type="quorum",
            signing_key=self.signing_key,  # the fleet is off loopback: a signed one
            **overrides,  # type: ignore[arg-type]
        )

    def start_fleet(self, settings: Settings, log_dir: Path, workers: int) -> ContainerFleet:
        return ContainerFleet(self, settings, log_dir, workers)

    def _running_rabbit(self) -> ContainerNode:
        for node in self.rabbit_nodes:
            node.container.reload()
            if node.container.status == "running":
                return node
        raise RuntimeError("no RabbitMQ node runs")

    def rabbit_node_of(self, connection_name: str) -> ContainerNode:
        """Each connection's `host` is the address of the node holding it (its container's
        address on the network, the client's through the published port too)."""
        rows = json.loads(self._running_rabbit().exec(
            "rabbitmqctl", "-q", "list_connections", "host", "client_properties",
            "--formatter", "json"))
        counts: dict[str, int] = {}
        for row in rows:
            if json.dumps(connection_name) in json.dumps(row.get("client_properties")):
                host = _ipv4(row.get("host"))
                counts[host] = counts.get(host, 0) + 1
        if not counts:
            raise RuntimeError(f"no {connection_name} connection found in {rows!r:.500}")
        address = max(counts, key=lambda n: counts[n])
        for node in self.rabbit_nodes:
            node.container.reload()
            networks = node.container.attrs["NetworkSettings"]["Networks"]
            if networks.get(self.network.name, {}).get("IPAddress") == address:
                return node
        raise RuntimeError(f"no RabbitMQ node at {address}")

    def etcd_leader(self) -> ContainerNode:
        leader = leader_among(self.etcd_members)
        return next(m for m in self.etcd_members if m is leader)

    def queue_types(self) -> dict[str, str]:
        listed = self._running_rabbit().exec("rabbitmqctl", "-q", "list_queues",
                                             "--no-table-headers", "name", "type")
        return dict(line.split("\t")[:2] for line in listed.splitlines() if "\t" in line)

