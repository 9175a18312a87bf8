"""A private RabbitMQ node for attacks that need broker settings of their own (the machine's
broker on 5672 is shared: never reconfigured nor restarted). Adapted from tests/chaos."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from droplet.cli.etcd_local import free_port


def _tool(name: str) -> str | None:
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else shutil.which(name)


class PrivateRabbit:
    def __init__(self, base: Path, extra_config: str = "") -> None:
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"attack{os.getpid()}x{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.extra_config = extra_config
        self.env = dict(os.environ)
        self._started = False

    def _write_files(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\ndisk_free_limit.absolute = 50MB\n" + self.extra_config
        )
        (self.base / "rabbitmq-env.conf").write_text("")
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
        tool = _tool("rabbitmqctl")
        assert tool is not None
        return subprocess.run([tool, "-n", self.node, *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout_s, check=True)

    def start(self, timeout_s: float = 90.0) -> PrivateRabbit:
        server = _tool("rabbitmq-server")
        assert server is not None
        self._write_files()
        subprocess.run([server, "-detached"], env=self.env, check=True, timeout=30,
                       capture_output=True, cwd=self.base)
        self._started = True
        self.ctl("wait", str(self.base / "rabbit.pid"), "--timeout", str(int(timeout_s)),
                 timeout_s=timeout_s + 10)
        return self

    def stop(self) -> None:
        if not self._started:
            return
        try:
            self.ctl("stop", timeout_s=60)
        except (subprocess.SubprocessError, AssertionError):
            pid_file = self.base / "rabbit.pid"
            if pid_file.exists():
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        self._started = False
