"""`droplet up`: a whole local cluster in the foreground, supervised, stopped by Ctrl-C.

One scheduler and N worker processes (each its own OS process: `droplet worker`), using the
configured RabbitMQ and etcd. When no etcd answers at the configured address, an embedded one
is started there from a local binary, with its data in the state directory. A child that dies
is started again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from droplet.cli.etcd_local import LocalEtcd, etcd_answers
from droplet.errors import DropletError
from droplet.runtime import open_kv
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.metadata import Metadata

log = logging.getLogger("droplet.up")

_READY_TIMEOUT_S = 60.0


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "droplet"


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DROPLET_BROKER_URL"] = settings.broker_url
    env["DROPLET_ETCD"] = ",".join(settings.etcd_endpoints)
    env["DROPLET_NAMESPACE"] = settings.namespace
    return env


class Child:
    def __init__(self, role: str, env: dict[str, str], log_level: str) -> None:
        self.role = role
        self.env = env
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        command = [sys.executable, "-m", "droplet.cli.main", "--log-level", self.log_level,
                   self.role]
        self.proc = subprocess.Popen(command, env=self.env)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def run_up(
    settings: Settings, workers: int, state_dir: str | None, log_level: str = "INFO"
) -> int:
    if workers < 1:
        raise DropletError("--workers must be at least 1")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    etcd: LocalEtcd | None = None
    endpoint = settings.etcd_endpoints[0]
    if not etcd_answers(endpoint):
        root = Path(state_dir) if state_dir else default_state_dir()
        etcd = LocalEtcd(root / f"etcd-{endpoint.replace(':', '-')}", endpoint).start()
        log.info("started an embedded etcd at %s (data in %s)", endpoint, etcd.data_dir)
    env = child_env(settings)
    children = [Child("scheduler", env, log_level)]
    children += [Child("worker", env, log_level) for _ in range(workers)]
    try:
        for child in children:
            child.start()
        _wait_ready(settings, workers, stop)
        if not stop.is_set():
            print(
                f"droplet up: ready — 1 scheduler, {workers} workers; broker "
                f"{_redacted(settings.broker_url)}, etcd {endpoint}; Ctrl-C stops",
                flush=True,
            )
        while not stop.wait(0.5):
            for child in children:
                if not child.alive():
                    code = child.proc.returncode if child.proc else None
                    log.warning("%s exited (code %s); starting a new one", child.role, code)
                    child.restarts += 1
                    child.start()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(10)
        if etcd is not None:
            etcd.stop()
        print("droplet up: stopped", flush=True)
    return 0


def _wait_ready(settings: Settings, workers: int, stop: threading.Event) -> None:
    kv = open_kv(settings)
    metadata = Metadata(kv, settings, Signer(settings.signing_key))
    deadline = time.monotonic() + _READY_TIMEOUT_S
    try:
        while not stop.is_set():
            try:
                if len(metadata.workers()) >= workers and metadata.schedulers():
                    return
            except DropletError as exc:
                log.debug("waiting for etcd: %s", exc)
            if time.monotonic() > deadline:
                raise DropletError(f"the cluster was not ready within {_READY_TIMEOUT_S:g}s")
            time.sleep(0.1)
    finally:
        kv.close()


def _redacted(url: str) -> str:
    """The broker URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
