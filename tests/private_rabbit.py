"""A private RabbitMQ node for tests that restart or reconfigure their broker.

The machine's RabbitMQ on 5672 is shared with other test runs (other engineers', other
worktrees), so a test that restarts its broker, or needs settings of its own, starts a node of
its own: own node name, ports, data, logs, config and Erlang cookie in a temp dir, stopped at
the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from droplet.cli.etcd_local import free_port

QueueDepths = list[tuple[str, int, int]]  # (queue, messages ready, messages unacked)


def _rabbit_tool(name: str) -> str | None:
    """The tool itself, not Debian's /usr/sbin wrapper, which as root re-runs it as the
    rabbitmq user with a fresh environment (and so on the shared node)."""
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else shutil.which(name)


# For tests that start RabbitMQ nodes of their own: skipped, saying why, where it is absent.
needs_rabbitmq_server = pytest.mark.skipif(_rabbit_tool("rabbitmq-server") is None,
                                           reason="needs rabbitmq-server")


def parse_queue_listing(text: str) -> QueueDepths:
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rows.append((parts[0], int(parts[1]), int(parts[2])))
    return rows


@dataclass(frozen=True)
class RabbitTls:
    """The node's certificate and the CA it trusts for client certificates. With
    require_client_cert a client without a certificate signed by ca_file is refused."""

    ca_file: str
    cert_file: str
    key_file: str
    require_client_cert: bool = True

    def config(self, listen: str) -> str:
        """rabbitmq.conf lines: a TLS listener on listen ([ip:]port), no plaintext one."""
        lines = [
            "listeners.tcp = none",
            f"listeners.ssl.default = {listen}",
            f"ssl_options.cacertfile = {self.ca_file}",
            f"ssl_options.certfile = {self.cert_file}",
            f"ssl_options.keyfile = {self.key_file}",
            f"ssl_options.verify = {'verify_peer' if self.require_client_cert else 'verify_none'}",
            f"ssl_options.fail_if_no_peer_cert = {str(self.require_client_cert).lower()}",
        ]
        return "\n".join(lines) + "\n"


class PrivateRabbit:
    """One RabbitMQ node for one test or run only (restarted with stop_app and start_app
    through `ctl`). With `tls` it listens with TLS only, and `url` is amqps://."""

    def __init__(self, base: Path, extra_config: str = "", label: str = "private",
                 tls: RabbitTls | None = None, cookie: str | None = None) -> None:
        self.base = base
        # Nodes of one cluster share their Erlang cookie (PrivateRabbitCluster).
        self.cookie = cookie or secrets.token_hex(16).upper()
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"{label}{os.getpid()}x{self.port}@localhost"
        scheme = "amqps" if tls else "amqp"
        self.url = f"{scheme}://guest:guest@127.0.0.1:{self.port}/%2F"
        self.extra_config = extra_config
        self.tls = tls
        self.env = dict(os.environ)
        self._started = False

    def _write_files(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")  # no management: no fixed ports
        listeners = (self.tls.config(f"127.0.0.1:{self.port}") if self.tls
                     else f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self.base / "rabbitmq.conf").write_text(
            listeners + "loopback_users = none\ndisk_free_limit.absolute = 50MB\n"
            + self.extra_config
        )
        (self.base / "rabbitmq-env.conf").write_text("")  # ignore /etc/rabbitmq's NODENAME
        cookie = self.base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
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
                       capture_output=True, cwd=self.base)
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
            self.kill()
        self._started = False

    def kill(self) -> None:
        """Kills the node's Erlang VM at once (SIGKILL), as a crashed machine would stop."""
        pid_file = self.base / "rabbit.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        self._started = False

    def join(self, seed: PrivateRabbit) -> None:
        """Makes this (running, empty) node a member of seed's cluster."""
        self.ctl("stop_app")
        self.ctl("join_cluster", seed.node)
        self.ctl("start_app")


class PrivateRabbitCluster:
    """`size` private nodes clustered with `rabbitmqctl join_cluster`: own node names, AMQP
    and distribution ports and one Erlang cookie, in sub-directories of base."""

    def __init__(self, base: Path, size: int = 3, label: str = "ha") -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes = [PrivateRabbit(base / f"node{i}", label=f"{label}{i}n", cookie=cookie)
                      for i in range(size)]

    @property
    def url(self) -> str:
        """Every node, comma-separated: a broker_url naming the whole cluster."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout_s: float = 120.0) -> PrivateRabbitCluster:
        try:
            failures: list[BaseException] = []

            def start(node: PrivateRabbit) -> None:
                try:
                    node.start(timeout_s)
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=start, args=(node,), daemon=True)
                       for node in self.nodes]  # in parallel: a node takes seconds to boot
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if failures:
                raise failures[0]
            for node in self.nodes[1:]:
                node.join(self.nodes[0])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
