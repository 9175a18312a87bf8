"""The cluster tests' services as local processes (local and external modes): a 3-node
RabbitMQ cluster and a 3-member etcd cluster, private nodes on free ports (never the machine's
shared broker), and the scheduler and workers as `droplet` processes; tests/ha_backend.py's
HaBackend, as tests/ha_containers.py is in containers mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from tests.ha_backend import in_parallel, leader_among
from tests.private_rabbit import PrivateRabbit, PrivateRabbitCluster, _rabbit_tool


def missing_tools() -> str | None:
    """Why the cluster tests cannot run here, or None."""
    if _rabbit_tool("rabbitmq-server") is None or _rabbit_tool("rabbitmqctl") is None:
        return "needs rabbitmq-server"
    if find_etcd_binary() is None:
        return "needs an etcd binary"
    if shutil.which("epmd") is None and not Path("/usr/lib/erlang/bin/epmd").exists():
        return "needs Erlang's epmd"
    return None


class HaServices:
    """Both clusters; `settings()` names every node and member, with quorum queues."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.rabbit = PrivateRabbitCluster(base / "rabbit")
        self.etcd = LocalEtcd.members(base / "etcd", 3)

    def start(self) -> HaServices:
        try:
            in_parallel(self._start_rabbit, self._start_etcd)
        except BaseException:
            self.stop()
            raise
        return self

    # Ports are picked free, then bound by the node a moment later: another process may take
    # one meanwhile (an outgoing connection's ephemeral port). Then a cluster starts afresh
    # on new ports, at most _ATTEMPTS times.
    _ATTEMPTS = 3

    def _start_rabbit(self) -> None:
        for attempt in range(1, self._ATTEMPTS + 1):
            try:
                self.rabbit.start()
                return
            except Exception:
                self.rabbit.stop()
                if attempt == self._ATTEMPTS:
                    raise
                self.rabbit = PrivateRabbitCluster(self.base / f"rabbit{attempt}")

    def _start_etcd(self) -> None:
        for attempt in range(1, self._ATTEMPTS + 1):
            try:
                for member in self.etcd:
                    member.start(wait=False)
                for member in self.etcd:
                    member.wait_ready(60)
                return
            except Exception:
                for member in self.etcd:
                    member.stop()
                if attempt == self._ATTEMPTS:
                    raise
                self.etcd = LocalEtcd.members(self.base / f"etcd{attempt}", 3)

    def stop(self) -> None:
        in_parallel(self.rabbit.stop, *[member.stop for member in self.etcd])

    def settings(self, **overrides: object) -> Settings:
        import uuid

        return Settings(
            broker_url=self.rabbit.url,
            etcd_endpoints=tuple(m.endpoint for m in self.etcd),
            namespace=f"h{uuid.uuid4().hex[:10]}",
            queue_type="quorum",
            **overrides,  # type: ignore[arg-type]
        )

    # -- tests/ha_backend.py's HaBackend -------------------------------------------------

    kind = "local processes"

    @property
    def rabbit_nodes(self) -> list[RabbitProcess]:
        return [RabbitProcess(node) for node in self.rabbit.nodes]

    @property
    def etcd_members(self) -> list[EtcdProcess]:
        return [EtcdProcess(member) for member in self.etcd]

    def start_fleet(self, settings: Settings, log_dir: Path, workers: int) -> ProcessFleet:
        from tests.conftest import start_cluster

        return ProcessFleet(start_cluster(settings, log_dir, workers=workers))

    def etcd_leader(self) -> EtcdProcess:
        return leader_among(self.etcd_members)  # type: ignore[return-value]

    def rabbit_node_of(self, connection_name: str) -> RabbitProcess:
        """The node holding most connections of that name (e.g. droplet-worker)."""
        counts: dict[int, int] = {}
        for node in self.rabbit.nodes:  # each lists the connections of the whole cluster
            try:
                done = node.ctl("-q", "list_connections", "client_properties", "port",
                                "--formatter", "json", timeout_s=30)
                rows = json.loads(done.stdout)
            except Exception:
                continue
            for row in rows:
                if json.dumps(connection_name) in json.dumps(row.get("client_properties")):
                    counts[int(row["port"])] = counts.get(int(row["port"]), 0) + 1
            break
        if not counts:
            raise RuntimeError(f"no {connection_name} connection found")
        port = max(counts, key=lambda p: counts[p])
        return RabbitProcess(next(node for node in self.rabbit.nodes if node.port == port))

    def queue_types(self) -> dict[str, str]:
        listed = self.rabbit.nodes[0].ctl("-q", "list_queues", "--no-table-headers", "name",
                                          "type").stdout
        return dict(line.split("\t")[:2] for line in listed.splitlines() if "\t" in line)


class RabbitProcess:
    """A private RabbitMQ node as tests/ha_backend.py's Node (equal when the same node)."""

    def __init__(self, node: PrivateRabbit) -> None:
        self.node = node
        self.name = node.node
        self.address = node.url

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RabbitProcess) and other.node is self.node

    def __hash__(self) -> int:
        return id(self.node)

    def kill(self) -> None:
        self.node.kill()

    def start(self) -> None:
        self.node.start()

    def restart(self) -> None:
        self.node.stop()
        self.node.start()


class EtcdProcess:
    """An etcd member process as tests/ha_backend.py's Node (equal when the same member)."""

    def __init__(self, member: LocalEtcd) -> None:
        self.member = member
        self.name = member.name
        self.address = member.endpoint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EtcdProcess) and other.member is self.member

    def __hash__(self) -> int:
        return id(self.member)

    def kill(self) -> None:
        self.member.kill()

    def start(self) -> None:
        self.member.start()

    def restart(self) -> None:
        self.member.stop()
        self.member.start()


class ProcessFleet:
    """A scheduler and workers as local `droplet` processes (tests/ha_backend.py's Fleet);
    cut() stops a worker with SIGSTOP: silent to the broker and to etcd, as if cut off."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.settings: Settings = cluster.settings

    @property
    def worker_count(self) -> int:
        return len(self.cluster.workers)

    def cut(self, worker: int) -> str:
        os.kill(self.cluster.workers[worker].pid, signal.SIGSTOP)
        return "worker process stopped (SIGSTOP)"

    def reconnect(self, worker: int) -> None:
        os.kill(self.cluster.workers[worker].pid, signal.SIGCONT)

    def running(self, worker: int) -> bool:
        return bool(self.cluster.workers[worker].poll() is None)

    def stop(self) -> None:
        self.cluster.stop()
