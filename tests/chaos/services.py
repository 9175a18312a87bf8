"""The processes a chaos run owns: a private RabbitMQ node and a fleet of Droplet processes.

The machine's RabbitMQ on 5672 is shared with other engineers' test runs, so a run that
restarts its broker starts a node of its own (own node name, ports, data, logs, config and
Erlang cookie in a temp dir) and stops it at the end. The fleet wraps LocalCluster and keeps
track of worker ids, because a worker restarted under the same id (`--id`) must be killable
again and every id ever used must be purged at the end.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.proto import pb
from droplet.settings import Settings
from tests.private_rabbit import QueueDepths, parse_queue_listing


def broker_answers(url: str) -> bool:
    from droplet.errors import DropletError
    from droplet.runtime import broker_factory

    try:
        broker_factory(Settings(broker_url=url), "droplet-chaos-probe")().close()
        return True
    except (DropletError, OSError):
        return False


def shared_queue_depths() -> QueueDepths:
    """Queue depths on the machine's shared broker (read only), for runs without a node."""
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        raise RuntimeError("no rabbitmqctl")
    done = subprocess.run([tool, "-q", "list_queues", "--no-table-headers", "name",
                           "messages_ready", "messages_unacknowledged"],
                          text=True, capture_output=True, timeout=60, check=True)
    return parse_queue_listing(done.stdout)


class Fleet:
    """Schedulers and workers as child processes; workers have explicit ids (w1, w2, ...)."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.cluster = LocalCluster(settings, log_dir)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}  # id -> current process
        self.ever: list[str] = []
        self._next = 1

    def start(self, workers: int, schedulers: int) -> Fleet:
        for _ in range(schedulers):
            self.cluster.start_scheduler()
        for _ in range(workers):
            self.add_worker()
        self.cluster.wait_ready(workers, timeout_s=60)
        return self

    def add_worker(self, worker_id: str | None = None) -> str:
        if worker_id is None:
            worker_id, self._next = f"w{self._next}", self._next + 1
        self.workers[worker_id] = self.cluster.start_worker(worker_id)
        if worker_id not in self.ever:
            self.ever.append(worker_id)
        return worker_id

    def live_workers(self) -> list[str]:
        return [w for w, p in self.workers.items() if p.poll() is None]

    def live_schedulers(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.cluster.schedulers if p.poll() is None]

    def kill_worker(self, worker_id: str) -> None:
        proc = self.workers.pop(worker_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def signal_worker(self, worker_id: str, signum: int) -> None:
        self.workers[worker_id].send_signal(signum)

    def stop(self) -> None:
        """Stops every process, resuming any paused one first (a stopped process cannot
        handle SIGTERM)."""
        for proc in self.cluster.workers + self.cluster.schedulers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        self.cluster.stop()

    def purge(self) -> None:
        purge_namespace(self.settings, self.ever)


def waiting_workers(client: Any) -> list[str]:
    """Workers whose pinned function waits for upstream results (a join, the second step of
    a chain): killing one of those is what loses partial DAG state. Read from etcd with the
    client's kv, the way `droplet status` finds pins."""
    prefix = client.settings.etcd_prefix
    dags, _ = client.kv.get_prefix(prefix + "dags/")
    downstream = {(record.dag.name, connection.sink)
                  for record in map(pb.DagRecord.FromString, dags.values())
                  for connection in record.dag.connections}
    pins, _ = client.kv.get_prefix(prefix + "pins/")
    return sorted(pin.worker_id for pin in map(pb.PinRecord.FromString, pins.values())
                  if (pin.dag_name, pin.function_name) in downstream)
