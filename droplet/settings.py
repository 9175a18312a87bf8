"""Settings shared by every Droplet process: one frozen dataclass, built once at the edge.

Nothing below the CLI or `droplet.connect()` reads the environment; everything receives a
`Settings`. The same fields can come from keyword arguments, the environment
(`Settings.from_env`), a broker URL (`Settings.from_url`) or a TOML file (`Settings.from_file`),
which is how a fleet on VMs shares one configuration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from droplet.errors import ConfigurationError
from droplet.settings_values import coerce, read_toml

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_ETCD = "127.0.0.1:2379"
MiB = 1024 * 1024
MAX_MESSAGE_BYTES = 16 * MiB  # max_message_bytes by default (RabbitMQ 4's max_message_size)
QUEUE_TYPES = ("classic", "quorum")
BROKER_TRANSPORTS = ("amqp", "pika")
ETCD_TRANSPORTS = ("lean", "grpc")

# Fields a repr shows as *** (the broker URL's password is masked instead).
_SECRET_FIELDS = frozenset({"signing_key", "etcd_password", "dashboard_token"})

# Environment variable -> field name; each field also has DROPLET_<FIELD> below.
_ENV_ALIASES = {"DROPLET_ETCD": "etcd_endpoints", "DROPLET_BROKER_URL": "broker_url"}


@dataclass(frozen=True)
class Settings:
    # One URL, or several nodes of one RabbitMQ cluster separated by commas (a list in TOML):
    # a process connects to the first that answers and, after losing a connection, tries the
    # next one first (broker/nodes.py).
    broker_url: str = DEFAULT_BROKER_URL
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ETCD,)
    # Prefix of every queue and etcd key: several clusters (or test runs) share one broker.
    namespace: str = "droplet"

    # TLS and credentials. The broker takes them from an amqps:// URL plus these files.
    broker_ca_file: str | None = None
    broker_cert_file: str | None = None
    broker_key_file: str | None = None
    etcd_user: str | None = None
    etcd_password: str | None = None
    etcd_ca_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None
    # etcd's requests (every read and write a call makes, leases, watches): "lean", Droplet's
    # own HTTP/2 client (store/http2.py, http2_stream.py), or "grpc", the etcd3 library's.
    # Authentication always takes gRPC.
    etcd_transport: str = "lean"
    # Shared fleet secret: when set, every message, function body and stored value is
    # HMAC-signed and anything unsigned or badly signed is refused. signing_key_file names a
    # file holding it instead (`droplet up` writes one in its state directory).
    signing_key: str | None = None
    signing_key_file: str | None = None
    # Without a configured secret, use the one `droplet up` made on this machine (if any).
    local_fleet_secret: bool = True
    # Schedulers and workers refuse to run without a signing_key against a broker or etcd that
    # is not on this machine's loopback, unless this says that is what you want.
    allow_unsigned: bool = False
    # With a signing_key: admin requests (register, DAG create/delete) older than this are
    # refused, so a captured request cannot be replayed later.
    admin_max_age_s: float = 300.0

    # Broker connections: a peer silent for two heartbeats is taken for dead.
    broker_heartbeat_s: int = 30
    # The AMQP client: "amqp", Droplet's own lean one (broker/amqp.py), or "pika" (broker/
    # rabbitmq.py), the general client it replaced, kept for an operator to fall back to.
    broker_transport: str = "amqp"
    # "classic", or "quorum" for a RabbitMQ cluster: every durable queue whose messages must
    # survive the loss of a node is then a quorum queue (replicated over the cluster), and
    # every publisher uses confirms. Quorum queues (RabbitMQ < 4) have no priorities: calls
    # are then served in arrival order whatever their priority (a warning says so at start).
    # Changing it re-creates the queues: `droplet migrate-queues`, fleet stopped.
    queue_type: str = "classic"

    # Client behaviour.
    request_timeout_s: float = 30.0  # admin requests (register, DAG create/delete)
    result_timeout_s: float = 60.0  # default of DropletFuture.get()
    # A DAG call's first trigger goes straight to its source's pinned worker when the client
    # can build the schedule itself (client/dagroutes.py); off: always through a scheduler.
    dag_direct: bool = True

    # Worker behaviour.
    worker_lease_ttl_s: int = 10  # a dead worker leaves the fleet after this long
    status_interval_s: float = 2.0
    function_time_limit_s: float = 0.0  # 0 = unlimited; per-function limits override
    # A call's outcome is kept this long when its caller reads it by key later (exec_func,
    # results too large for a reply); 0 = keep.
    result_ttl_s: int = 24 * 3600
    # Every other outcome (the caller had its reply) is kept this long, to recognise a call
    # that runs again (a redelivery, a re-send) and answer it with its first outcome.
    result_window_s: int = 300
    cache_max_entries: int = 4096
    cache_max_bytes: int = 256 * MiB
    # Fan-in state of a DAG call (partials of a join) expires after this long: keep it above
    # the longest a branch of a DAG may take.
    schedule_ttl_s: float = 86400.0
    own_queue_prefetch: int = 64
    # Quick deliveries that run at once on one host, over all its workers of this user
    # (worker/slots.py): -1, one per core; 0, no limit. The others wait off the run queue.
    run_slots: int = -1
    # Workers of one host that consume the shared work queue at once (worker/seats.py): -1, as
    # many as run_slots; 0, every worker. The others serve their own queues and wait for a seat.
    queue_seats: int = -1
    # A call running longer than this is acked and held as a claim in etcd instead: keep it
    # well under RabbitMQ's consumer_timeout (30 min by default).
    long_call_s: float = 600.0

    # Prometheus endpoint of schedulers and workers: the first free port from here (0: off).
    metrics_port: int = 0
    # Calls each worker keeps and publishes for the dashboard (worker/recorder.py); 0: none.
    recent_calls: int = 200
    # `droplet dashboard`: actions (requeue, purge dead letters) need this token; without one
    # the dashboard is read-only.
    dashboard_token: str | None = None
    # OpenTelemetry spans of every call's path (tracing.py): off, otlp, console, app, dir:PATH.
    tracing: str = "off"

    # How long etcd calls retry while etcd is unreachable before failing.
    store_retry_s: float = 15.0

    # Store limits.
    max_value_bytes: int = 128 * MiB
    # Arguments travel inside messages: larger ones belong in the store (put_object and a
    # DropletReference), which is what the error says.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    chunk_bytes: int = 1 * MiB

    # A MULTI call that loses its commit to concurrent writers runs again on a fresh snapshot,
    # at most this many runs in all; then it fails with CONFLICT.
    multi_max_attempts: int = 10
    # etcd's --max-txn-ops: a MULTI call commits at most about this many keys at once.
    etcd_max_txn_ops: int = 128

    # Scheduler behaviour.
    pin_timeout_s: float = 5.0
    dead_letter_max_redeliveries: int = 5  # then a message is dead-lettered as poison
    hard_kill_grace_s: float = 10.0  # a function ignoring its time limit this long: exit

    # issue 14 part 2. Call priorities run 0 (default) .. max_priority; it is the
    # x-max-priority of the call, work and worker queues, so changing it means re-creating
    # them (`droplet migrate-queues`). RabbitMQ advises at most 10 levels.
    max_priority: int = 9
    # Longest delay of call_later / call_at. A cancel is kept this long (and at least
    # result_ttl_s), so that a delayed call cancelled now is still known cancelled when due.
    max_delay_s: float = 86400.0
    # issue 14 part 1b. Copies of a speculative DAG function (register_dag with
    # (name, invalid_results)) run at once, at most: fewer when fewer workers are alive.
    speculative_copies: int = 2

    # issue 14 part 1a. A worker's resource tags, `gpu=1,mem=16` (or a TOML table
    # `worker_resources = {gpu = 1, mem = 16}`): calls and DAG functions that need tags run
    # only on workers that have them (droplet/resources.py). `droplet worker --resources`
    # overrides it.
    worker_resources: str | None = None

    @property
    def cancel_keep_s(self) -> float:
        """How long a cancel (its CANCELLED outcome and its record) is kept: past the
        longest delay a cancelled call may still be due after (leases live 0.9 x their ttl),
        and never less than other outcomes read by key; 0 (kept) when those are kept."""
        if self.result_ttl_s <= 0:
            return 0.0
        return max(float(self.result_ttl_s), self.max_delay_s * 1.2 + self.result_window_s)

    def __post_init__(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigurationError(
                f"setting 'queue_type': bad value {self.queue_type!r} (classic or quorum)")
        if self.broker_transport not in BROKER_TRANSPORTS:
            raise ConfigurationError(f"setting 'broker_transport': bad value "
                                     f"{self.broker_transport!r} (amqp or pika)")
        if self.etcd_transport not in ETCD_TRANSPORTS:
            raise ConfigurationError(f"setting 'etcd_transport': bad value "
                                     f"{self.etcd_transport!r} (lean or grpc)")
        if self.run_slots < -1:
            raise ConfigurationError(f"setting 'run_slots': bad value {self.run_slots!r} "
                                     "(-1: one per core, 0: no limit, or a number of slots)")
        if self.queue_seats < -1:
            raise ConfigurationError(f"setting 'queue_seats': bad value {self.queue_seats!r} "
                                     "(-1: as many as run_slots, 0: every worker, or a number)")
        self._check_ranges()
        if not self.broker_urls:
            raise ConfigurationError("setting 'broker_url': no URL given")
        endpoints = tuple(self._etcd_address(spec) for spec in self.etcd_endpoints)
        if endpoints != self.etcd_endpoints:
            object.__setattr__(self, "etcd_endpoints", endpoints)
        for url in self.broker_urls:
            # pika reads http:// as plaintext and https:// as TLS with neither broker_ca_file
            # nor a client certificate, and fails on a bare host with "list index out of
            # range": only what the README promises is taken (its password never echoed).
            if url.split("://", 1)[0].lower() not in ("amqp", "amqps") or "://" not in url:
                raise ConfigurationError(
                    f"setting 'broker_url': {redacted_url(url)!r} is not an amqp:// or "
                    "amqps:// URL (several nodes are separated by commas; a comma in a password is "
                    "%2C)")

    def _check_ranges(self) -> None:
        """Values that cannot work are refused here, saying which setting and what it takes:
        a bad namespace was a bare ValueError from the queue names, a max_priority RabbitMQ
        cannot take was blamed on queues "declared by an older Droplet", a negative heartbeat
        was "RabbitMQ connect failed: argument out of range", and a result_timeout_s <= 0
        made every get() time out at once."""
        from droplet.broker_config.names import check_name

        try:
            check_name("namespace", self.namespace)
        except ValueError as exc:
            raise ConfigurationError(f"setting 'namespace': {exc}") from None
        if not 0 <= self.max_priority <= 255:
            raise ConfigurationError(f"setting 'max_priority': bad value {self.max_priority!r} "
                                     "(0 = no priorities, up to 255; 9 is the default)")
        for name in ("result_timeout_s", "request_timeout_s", "worker_lease_ttl_s"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ConfigurationError(f"setting {name!r}: bad value {value!r} "
                                         "(a number of seconds > 0)")
        if self.broker_heartbeat_s < 0:
            raise ConfigurationError(f"setting 'broker_heartbeat_s': bad value "
                                     f"{self.broker_heartbeat_s!r} (seconds >= 0; 0 = none)")
        if self.speculative_copies < 1:
            raise ConfigurationError(f"setting 'speculative_copies': bad value "
                                     f"{self.speculative_copies!r} (a number of copies >= 1)")

    def _etcd_address(self, spec: str) -> str:
        """host:port of an endpoint also written as etcd prints it (http://host:port/, as
        etcdctl takes it): gRPC read the URL as a host name that never resolves, and the
        process retried it for store_retry_s."""
        scheme, sep, rest = spec.strip().partition("://")
        if not sep:
            return spec.strip()
        if scheme.lower() not in ("http", "https"):
            raise ConfigurationError(f"setting 'etcd_endpoints': {spec!r} is not host:port "
                                     "(or http://host:port)")
        if scheme.lower() == "https" and not (self.etcd_ca_file or self.etcd_cert_file):
            raise ConfigurationError(
                f"setting 'etcd_endpoints': {spec!r} is https://, but TLS to etcd is switched "
                "on by etcd_ca_file (DROPLET_ETCD_CA_FILE): set it to the CA of etcd's "
                "certificate")
        return rest.rstrip("/")

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """The broker_url's nodes, in the order given (a comma inside one URL is %2C)."""
        return tuple(url.strip() for url in self.broker_url.split(",") if url.strip())

    @property
    def broker_cluster(self) -> bool:
        """A RabbitMQ cluster (several nodes or quorum queues): replies then go to exclusive
        reply queues rather than direct reply-to (broker_config/names.py says why)."""
        return self.quorum_queues or len(self.broker_urls) > 1

    @property
    def quorum_queues(self) -> bool:
        return self.queue_type == "quorum"

    @property
    def etcd_prefix(self) -> str:
        return f"/{self.namespace}/"

    def with_secret_file(self) -> Settings:
        """A copy whose signing_key is read from signing_key_file, when only that is set."""
        if self.signing_key or not self.signing_key_file:
            return self
        path = Path(self.signing_key_file).expanduser()
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the fleet secret {path}: {exc}") from None
        if not secret:
            raise ConfigurationError(f"the fleet secret file {path} is empty")
        return self.with_(signing_key=secret)

    def with_local_fleet_secret(self) -> Settings:
        """For clients on the machine of a `droplet up` cluster: the secret it generated
        (in its default state directory), unless a secret is configured already."""
        if self.signing_key or self.signing_key_file or not self.local_fleet_secret:
            return self.with_secret_file()
        local = fleet_secret_path(default_state_dir())
        return self.with_(signing_key_file=str(local)).with_secret_file() if local.exists() \
            else self

    def unsigned_exposure(self) -> list[str]:
        """The endpoints off this machine's loopback that an unsigned fleet would trust
        (empty when signed, allowed, or all on loopback)."""
        if self.signing_key or self.allow_unsigned:
            return []
        exposed = []
        for url in self.broker_urls:
            host = _url_host(url)
            if not _is_loopback(host):
                exposed.append(f"broker {host}")
        for endpoint in self.etcd_endpoints:
            etcd_host = (endpoint.rpartition(":")[0] or endpoint).strip("[]")
            if not _is_loopback(etcd_host):
                exposed.append(f"etcd {endpoint}")
        return exposed

    def __repr__(self) -> str:
        """Every field, but no secret: a Settings in a log line or a traceback must not give
        away the fleet secret or a password (the broker URL's is masked)."""
        shown = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in _SECRET_FIELDS and value:
                value = "***"
            elif item.name == "broker_url":
                value = redacted_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_url(cls, broker_url: str, **overrides: Any) -> Settings:
        return cls(broker_url=broker_url, **overrides)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Reads DROPLET_<FIELD> variables (and DROPLET_ETCD, DROPLET_BROKER_URL)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, raw in env.items():
            if key in _ENV_ALIASES:
                values[_ENV_ALIASES[key]] = raw
            elif key.startswith("DROPLET_") and key[8:].lower() in names:
                values[key[8:].lower()] = raw
        if config := env.get("DROPLET_CONFIG"):
            values = {**read_toml(Path(config)), **values}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls._build(values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Settings:
        values = read_toml(Path(path))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls._build(values)

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> Settings:
        kwargs: dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, raw in values.items():
            if name not in types:
                raise ConfigurationError(f"unknown setting {name!r}")
            kwargs[name] = coerce(name, str(types[name]), raw)
        return cls(**kwargs)


def default_state_dir() -> Path:
    """Where `droplet up` keeps its embedded etcd's data and the fleet secret it made."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "droplet"


def fleet_secret_path(state_dir: Path) -> Path:
    return state_dir / "fleet.key"


def redacted_url(url: str) -> str:
    """A broker URL (or a comma-separated list of them) without passwords, for messages."""
    shown = []
    for one in url.split(","):
        scheme, sep, rest = one.partition("://")
        if not sep:
            scheme, rest = "", one
        creds, at, host = rest.rpartition("@")
        if at and not sep:  # the tail of a URL cut at a comma of its password
            rest = f"***@{host}"
        elif at and ":" in creds:
            rest = f"{creds.split(':', 1)[0]}:***@{host}"
        shown.append(f"{scheme}{sep}{rest}")
    return ",".join(shown)


def _url_host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    rest = rest.rsplit("@", 1)[-1]
    host = rest.split("/", 1)[0]
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
