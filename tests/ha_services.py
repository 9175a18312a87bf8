"""A 3-node RabbitMQ cluster and a 3-member etcd cluster of local processes, for the cluster
tests (tests/e2e/test_ha_cluster.py): private nodes on free ports, never the machine's
shared broker."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.settings import Settings
from tests.private_rabbit import PrivateRabbit, PrivateRabbitCluster, _rabbit_tool

# What the cluster tests measured, printed again at the end of the run (tests/conftest.py),
# so CI's log shows the figures without -s.
FIGURES: list[str] = []


def report(line: str) -> None:
    print(f"\n{line}")
    FIGURES.append(line)


def missing_tools() -> str | None:
    """Why the cluster tests cannot run here, or None."""
    if _rabbit_tool("rabbitmq-server") is None or _rabbit_tool("rabbitmqctl") is None:
        return "needs rabbitmq-server"
    if find_etcd_binary() is None:
        return "needs an etcd binary"
    if shutil.which("epmd") is None and not Path("/usr/lib/erlang/bin/epmd").exists():
        return "needs Erlang's epmd"
    return None


def in_parallel(*actions: Callable[[], object]) -> None:
    """Runs actions on threads and waits for all; the first failure is raised."""
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


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

    # -- who is who ----------------------------------------------------------------------

    def etcd_leader(self) -> LocalEtcd:
        """The member etcd's maintenance status names the leader."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for member in self.etcd:
                status = etcd_status(member.endpoint)
                if status and status["header"]["member_id"] == status["leader"]:
                    return member
            time.sleep(0.2)
        raise RuntimeError("no etcd leader within 30 s")

    def rabbit_node_of(self, connection_name: str) -> PrivateRabbit:
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
        return next(node for node in self.rabbit.nodes if node.port == port)


def etcd_status(endpoint: str) -> dict[str, dict[str, str]] | None:
    """etcd's maintenance status through its JSON gateway (None when it does not answer)."""
    request = urllib.request.Request(f"http://{endpoint}/v3/maintenance/status", data=b"{}",
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            data = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "leader" in data else None
