"""The processes a chaos run owns: a private RabbitMQ node and a fleet of Droplet processes.

The machine's RabbitMQ on 5672 is shared with other engineers' test runs, so a run that
restarts its broker starts a node of its own (own node name, ports, data, logs, config and
Erlang cookie in a temp dir) and stops it at the end. The fleet wraps LocalCluster and keeps
track of worker ids, because a worker restarted under the same id (`--id`) must be killable
again and every id ever used must be purged at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.cli.etcd_local import free_port
from droplet.proto import pb
from droplet.settings import Settings

QueueDepths = list[tuple[str, int, int]]  # (queue, messages ready, messages unacked)


def _rabbit_tool(name: str) -> str | None:
    """The tool itself, not Debian's /usr/sbin wrapper, which as root re-runs it as the
    rabbitmq user with a fresh environment (and so on the shared node)."""
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else shutil.which(name)


def parse_queue_listing(text: str) -> QueueDepths:
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rows.append((parts[0], int(parts[1]), int(parts[2])))
    return rows


class PrivateRabbit:
    """One RabbitMQ node for this run only (the nemesis restarts it with stop_app and
    start_app through `ctl`)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chaos{os.getpid()}x{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.env = dict(os.environ)
        self._started = False

    def _write_files(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")  # no management: no fixed ports
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\ndisk_free_limit.absolute = 50MB\n"
        )
        (self.base / "rabbitmq-env.conf").write_text("")  # ignore /etc/rabbitmq's NODENAME
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        self.env.update(
            HOME=str(self.base), RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.base / "rabbit.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )

    def ctl(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        tool = _rabbit_tool("rabbitmqctl")
        if tool is None:
            raise RuntimeError("no rabbitmqctl")
        return subprocess.run([tool, "-n", self.node, *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout_s, check=True)

    def start(self, timeout_s: float = 90.0) -> PrivateRabbit:
        server = _rabbit_tool("rabbitmq-server")
        if server is None or _rabbit_tool("rabbitmqctl") is None:
            raise RuntimeError("rabbitmq-server or rabbitmqctl is not installed")
        self._write_files()
        subprocess.run([server, "-detached"], env=self.env, check=True, timeout=30,
                       capture_output=True)
        self._started = True
        self.ctl("wait", str(self.base / "rabbit.pid"), "--timeout", str(int(timeout_s)),
                 timeout_s=timeout_s + 10)
        return self

    def list_queues(self) -> QueueDepths:
        done = self.ctl("-q", "list_queues", "--no-table-headers", "name", "messages_ready",
                        "messages_unacknowledged")
        return parse_queue_listing(done.stdout)

    def stop(self) -> None:
        """Stops the node; kills it by its pid file if it does not stop."""
        if not self._started:
            return
        try:
            self.ctl("stop", timeout_s=60)
        except (subprocess.SubprocessError, RuntimeError):
            pid_file = self.base / "rabbit.pid"
            if pid_file.exists():
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        self._started = False


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
