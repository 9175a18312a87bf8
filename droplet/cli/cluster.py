"""A cluster of child processes on this machine: `droplet up`, `droplet bench` and the test
suite all start schedulers and workers this way.

Each child is a `droplet scheduler` or `droplet worker` process that gets exactly the parent's
settings through its environment (DROPLET_<FIELD>), so what a parent was configured with, from
a file, flags or the environment, is what its children run with.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import closing, suppress
from pathlib import Path

from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import RETRY_BUCKETS
from droplet.errors import DropletError
from droplet.proto import pb
from droplet.runtime import broker_factory, open_kv
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.metadata import Metadata


def child_env(settings: Settings) -> dict[str, str]:
    """Exactly the parent's settings; a secret kept in a file is passed as the file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPLET_")}
    env["PYTHONUNBUFFERED"] = "1"
    settings = settings.with_(local_fleet_secret=False)
    for setting in dataclasses.fields(settings):
        value = getattr(settings, setting.name)
        if setting.name == "signing_key" and settings.signing_key_file:
            continue
        if value is not None:
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[f"DROPLET_{setting.name.upper()}"] = text
    return env


class LocalCluster:
    def __init__(
        self, settings: Settings, log_dir: Path | None = None, log_level: str = "INFO",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env`: more environment for the children (a test's own TMPDIR, say)."""
        self.settings = settings
        self.log_dir = log_dir
        self.log_level = log_level
        self.schedulers: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self._worker_args: list[tuple[str, ...]] = []  # each worker's tags, for its replacement
        self._env = {**child_env(settings), **(env or {})}

    def _spawn(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "droplet.cli.main", "--log-level", self.log_level,
                   role, *args]
        if self.log_dir is None:
            return subprocess.Popen(command, env=self._env)
        index = len(self.schedulers) + len(self.workers)
        with open(self.log_dir / f"{role}-{index}.log", "wb") as log:
            return subprocess.Popen(command, env=self._env, stdout=log,
                                    stderr=subprocess.STDOUT)

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        proc = self._spawn("scheduler")
        self.schedulers.append(proc)
        return proc

    def start_worker(self, worker_id: str | None = None,
                     resources: str | None = None) -> subprocess.Popen[bytes]:
        """One more worker; `resources`: its resource tags (gpu=1,mem=16)."""
        tags = ("--resources", resources) if resources is not None else ()
        proc = self._spawn("worker", *(["--id", worker_id] if worker_id else []), *tags)
        self.workers.append(proc)
        self._worker_args.append(tags)  # a replacement gets a fresh id, and the same tags
        return proc

    def start(self, workers: int, schedulers: int = 1) -> LocalCluster:
        for _ in range(schedulers):
            self.start_scheduler()
        for _ in range(workers):
            self.start_worker()
        return self

    def worker_ids(self) -> list[str]:
        """Default ids of the workers started so far (<host>-<pid>)."""
        return [f"{socket.gethostname()}-{p.pid}" for p in self.workers]

    def replace_exited(self) -> list[str]:
        """Starts a new process for each child that exited; says which roles."""
        replaced = []
        for group, role in ((self.schedulers, "scheduler"), (self.workers, "worker")):
            for index, proc in enumerate(group):
                if proc.poll() is not None:
                    args = (self._worker_args[index]
                            if role == "worker" and index < len(self._worker_args) else ())
                    group[index] = self._spawn(role, *args)
                    replaced.append(f"{role} (exit code {proc.returncode})")
        return replaced

    def wait_ready(self, workers: int, timeout_s: float = 60.0) -> None:
        """Until etcd lists `workers` workers and each of this cluster's schedulers says it
        sees them (fleet_ready); a child that exits meanwhile is an error (its log says why)."""
        where = f"; logs in {self.log_dir}" if self.log_dir else ""
        deadline = time.monotonic() + timeout_s
        pids = {p.pid for p in self.schedulers}
        with closing(open_kv(self.settings)) as kv:
            metadata = Metadata(kv, self.settings, Signer(self.settings.signing_key))
            while time.monotonic() < deadline:
                if any(p.poll() is not None for p in self.schedulers + self.workers):
                    raise DropletError(f"a cluster process exited at start{where}")
                try:
                    if fleet_ready(metadata.workers(), metadata.schedulers(), workers, pids):
                        return
                except DropletError:
                    pass  # etcd still starting
                time.sleep(0.05)
        raise DropletError(f"the cluster was not ready within {timeout_s:g}s{where}")

    def stop(self, timeout_s: float = 10.0, abort: threading.Event | None = None) -> None:
        """SIGTERM to every process (a worker finishes the call in hand), then SIGKILL to
        those still running after `timeout_s` in all, or as soon as `abort` is set. (Each
        process had timeout_s of its own: Ctrl-C took 10 s more per busy worker.)"""
        procs = self.schedulers + self.workers
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        while (any(proc.poll() is None for proc in procs) and time.monotonic() < deadline
               and not (abort is not None and abort.is_set())):
            time.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def fleet_ready(workers: Sequence[pb.WorkerStatus], schedulers: Sequence[pb.SchedulerStatus],
                want_workers: int, scheduler_pids: Collection[int]) -> bool:
    """Etcd lists `want_workers` workers, and each scheduler of ours (this host, one of
    `scheduler_pids`) is listed and sees as many: a scheduler learns of workers through its
    watch, a moment after etcd lists them, and until then answers a call NO_RESOURCES.
    Schedulers of others in the namespace (an old record, another version) are not waited on."""
    host = socket.gethostname()
    seen = {s.pid: s.workers_seen for s in schedulers if s.host == host}
    return (len(workers) >= want_workers
            and all(seen.get(pid, -1) >= want_workers for pid in scheduler_pids))


def purge_namespace(settings: Settings, worker_ids: list[str] | None = None) -> None:
    """Deletes a namespace's etcd keys and queues (its workers' too, when named)."""
    with closing(open_kv(settings)) as kv:
        kv.delete(settings.etcd_prefix, prefix=True)
    names = QueueNames.of(settings)
    queues = [names.calls, names.admin, names.work, names.dead]
    queues += [names.retry(2**k) for k in range(RETRY_BUCKETS)]  # retry and delay queues
    for worker in worker_ids or []:
        queues += [names.worker(worker), names.inbox(worker)]
    with closing(broker_factory(settings, "droplet-purge")()) as conn:
        for queue in queues:
            conn.delete_queue(queue)
