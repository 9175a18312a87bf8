"""The dashboard's one reader of etcd and the broker: a thread that samples the fleet every
couple of seconds into an immutable `Snapshot` that pages render from.

Why a sampler: a page must never wait on a service (an etcd restart would hang every open
browser tab) and the fleet must not be read once per viewer. Each service is sampled on its
own and fails on its own: while etcd or RabbitMQ is away the snapshot says so (since when, and
why) and keeps the last data it had from it; when the service is back the next sample recovers.
etcd is read with a short retry budget, and the broker only through passive queue declares on a
connection of the dashboard's own, so sampling costs the fleet a few reads per interval and
never touches a call's path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from droplet import resources
from droplet.broker.interface import BrokerConnection, ConnectionFactory
from droplet.broker_config.names import QueueNames, can_be_queue
from droplet.dashboard.history import Call, CallLog, FunctionHistory, Point, QueueHistory
from droplet.dashboard.svg import Placement
from droplet.errors import DropletError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV
from droplet.store.metadata import Metadata

log = logging.getLogger(__name__)

FORGET_DEAD_S = 600.0  # a dead worker stays listed this long after it was last seen
_NAMES_EVERY = 10  # samples between full re-reads of the function names


@dataclass(frozen=True)
class Service:
    up: bool
    detail: str = ""  # why it is down
    since: float = 0.0  # when it went up or down


@dataclass(frozen=True)
class WorkerRow:
    id: str
    alive: bool
    host: str = ""
    pid: int = 0
    utilisation: float = 0.0
    in_hand: int = 0
    pinned: str = ""
    cached_keys: int = 0
    calls_total: int = 0
    errors_total: int = 0
    incarnation: str = ""
    started_at: float = 0.0
    last_seen: float = 0.0
    metrics_port: int = 0
    tags: str = ""  # resource tags, gpu=1,mem=16 (empty: none)


@dataclass(frozen=True)
class SchedulerRow:
    id: str
    host: str
    pid: int
    started_at: float
    metrics_port: int


@dataclass(frozen=True)
class DagView:
    name: str
    ready: bool
    functions: list[str]
    edges: list[tuple[str, str]]
    placements: dict[str, Placement]


@dataclass(frozen=True)
class QueueRow:
    name: str
    role: str
    depth: int | None  # None: the queue does not exist (or the broker is down)
    rate: float | None  # growth per second over the last samples


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    namespace: str
    etcd: Service
    broker: Service
    schedulers: list[SchedulerRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    dags: list[DagView] = field(default_factory=list)
    queues: list[QueueRow] = field(default_factory=list)


class Sampler:
    def __init__(self, settings: Settings, open_kv: Callable[[], KV],
                 connect: ConnectionFactory, interval_s: float = 2.0) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self._open_kv = open_kv
        self._connect = connect
        self._kv: KV | None = None
        self._conn: BrokerConnection | None = None
        self.keys = StoreKeys(settings.etcd_prefix)
        self.names = QueueNames.of(settings)
        self.started_at = time.time()
        self._lock = threading.Lock()  # guards the histories below
        self._queues = QueueHistory()
        self._functions = FunctionHistory(self.started_at)
        self._calls = CallLog()
        self._seen: dict[str, WorkerRow] = {}
        self._names: list[str] = []
        self._names_count = -1
        self._round = 0
        self.snapshot = Snapshot(0.0, settings.namespace, Service(False, "not sampled yet"),
                                 Service(False, "not sampled yet"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- running -----------------------------------------------------------------------------

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dashboard-sampler")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        if self._kv is not None:
            self._kv.close()

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.sample()
            except Exception:  # a bug must not stop the sampling: the page shows it stale
                log.exception("sampling the fleet failed")
            if self._stop.wait(max(0.05, self.interval_s - (time.monotonic() - started))):
                return

    def sample(self) -> Snapshot:
        """Reads etcd, then the broker; publishes and returns the new snapshot."""
        now = time.time()
        self._round += 1
        previous = self.snapshot
        fleet = self._sample_etcd(now, previous)
        snapshot = self._sample_broker(now, fleet)
        self.snapshot = snapshot
        return snapshot

    # -- etcd --------------------------------------------------------------------------------

    def _sample_etcd(self, now: float, previous: Snapshot) -> Snapshot:
        try:
            if self._kv is None:
                self._kv = self._open_kv()
            fleet = self._read_fleet(self._kv, now)
        except DropletError as exc:
            log.info("etcd is unavailable to the dashboard: %s", exc)
            down = _changed(previous.etcd, False, str(exc), now)
            return replace(previous, taken_at=now, etcd=down)
        return replace(fleet, etcd=_changed(previous.etcd, True, "", now),
                       broker=previous.broker)

    def _read_fleet(self, kv: KV, now: float) -> Snapshot:
        metadata = Metadata(kv, self.settings, Signer(None))
        statuses = metadata.workers()
        schedulers = metadata.schedulers()
        pins = {p.worker_id: p for p in metadata.pins()}
        members, _ = kv.get_prefix(self.keys.fleet)
        placements, _ = kv.get_prefix(self.keys.placements)
        recent, _ = kv.get_prefix(self.keys.recent)
        count = kv.count_prefix(self.keys.functions)
        if count != self._names_count or self._round % _NAMES_EVERY == 1:
            self._names = metadata.function_names()
            self._names_count = count
        workers = self._workers(statuses, pins, members, now)
        alive = {w.id for w in workers if w.alive}
        with self._lock:
            for raw in recent.values():
                try:
                    record = pb.RecentCalls.FromString(raw)
                except Exception:  # a damaged record is skipped, not fatal
                    continue
                self._calls.add(record)
                self._functions.add(record, now)
        return Snapshot(
            taken_at=now, namespace=self.settings.namespace, etcd=Service(True),
            broker=Service(False),
            schedulers=sorted((SchedulerRow(s.id, s.host, s.pid, s.started_at, s.metrics_port)
                               for s in schedulers), key=lambda s: s.id),
            workers=workers, functions=list(self._names),
            dags=self._dags(metadata.dag_records(), placements, alive),
        )

    def _workers(self, statuses: list[pb.WorkerStatus], pins: dict[str, pb.PinRecord],
                 members: dict[str, bytes], now: float) -> list[WorkerRow]:
        """Live workers from their status records; dead ones from what was seen of them, or
        from fleet/ (joined, not yet reaped) and pins/ when never seen alive here."""
        live: dict[str, WorkerRow] = {}
        for s in statuses:
            pin = pins.get(s.id)
            live[s.id] = WorkerRow(
                id=s.id, alive=True, host=s.host, pid=s.pid, utilisation=_share(s.utilisation),
                in_hand=s.queue_depth, pinned=f"{pin.dag_name}/{pin.function_name}" if pin else "",
                cached_keys=len(s.cached_keys), calls_total=s.calls_total,
                errors_total=s.errors_total, incarnation=s.incarnation, started_at=s.started_at,
                last_seen=now, metrics_port=s.metrics_port,
                tags=resources.describe(s.resources) if s.resources else "",
            )
        known_dead = {StoreKeys.tail(k, self.keys.fleet) for k in members} | set(pins)
        for worker_id in known_dead - set(live) - set(self._seen):
            pin = pins.get(worker_id)
            self._seen[worker_id] = WorkerRow(
                id=worker_id, alive=False,
                pinned=f"{pin.dag_name}/{pin.function_name}" if pin else "")
        for worker_id, row in list(self._seen.items()):
            if worker_id in live:
                continue
            if not row.alive and now - row.last_seen > FORGET_DEAD_S \
                    and worker_id not in known_dead:
                del self._seen[worker_id]
                continue
            pin = pins.get(worker_id)  # a scheduler moves a dead worker's pin away
            self._seen[worker_id] = replace(
                row, alive=False, utilisation=0.0, in_hand=0,
                pinned=f"{pin.dag_name}/{pin.function_name}" if pin else "")
        self._seen.update(live)
        return sorted(self._seen.values(), key=lambda w: (not w.alive, w.id))

    def _dags(self, records: Iterable[pb.DagRecord], placements: dict[str, bytes],
              alive: set[str]) -> list[DagView]:
        where: dict[tuple[str, str], str] = {}
        for key, raw in placements.items():
            dag_name, _, function = StoreKeys.tail(key, self.keys.placements).partition("/")
            where[(dag_name, function)] = raw.decode(errors="replace")
        views = []
        for record in records:
            dag = record.dag
            views.append(DagView(
                name=dag.name, ready=record.ready, functions=list(dag.functions),
                edges=[(c.source, c.sink) for c in dag.connections],
                placements={f: Placement(where.get((dag.name, f), ""),
                                         where.get((dag.name, f), "") in alive)
                            for f in dag.functions},
            ))
        return sorted(views, key=lambda d: d.name)

    # -- the broker --------------------------------------------------------------------------

    def _sample_broker(self, now: float, fleet: Snapshot) -> Snapshot:
        names = self.names
        queues = [(names.calls, "calls to schedulers"), (names.admin, "admin requests"),
                  (names.work, "shared work"), (names.dead, "dead letters")]
        for worker in fleet.workers:
            mine = [(names.worker(worker.id), f"worker {worker.id}"),
                    (names.inbox(worker.id), f"inbox of {worker.id}")]
            if worker.alive and all(can_be_queue(name) for name, _ in mine):
                queues += mine
        try:
            if self._conn is None or not self._conn.is_open:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._conn = self._connect()
            conn = self._conn
            depths = {name: conn.queue_depth(name) for name, _ in queues}
        except DropletError as exc:
            log.info("RabbitMQ is unavailable to the dashboard: %s", exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            down = _changed(fleet.broker, False, str(exc), now)
            rows = [QueueRow(name, role, None, None) for name, role in queues]
            return replace(fleet, broker=down, queues=rows)
        with self._lock:
            self._queues.add(now, depths)
            rows = [QueueRow(name, role, depths[name], self._queues.rate(name))
                    for name, role in queues]
        return replace(fleet, broker=_changed(fleet.broker, True, "", now), queues=rows)

    # -- what pages ask for (thread-safe) -----------------------------------------------------

    def calls(self) -> list[Call]:
        with self._lock:
            return self._calls.calls()

    def errors(self) -> list[Call]:
        with self._lock:
            return self._calls.errors()

    def function_points(self, since: float) -> dict[str, list[Point]]:
        with self._lock:
            return {f: self._functions.points(f, since) for f in self._functions.functions()}

    def function_summary(self, since: float) -> dict[str, Point]:
        with self._lock:
            found = {f: self._functions.summary(f, since) for f in self._functions.functions()}
        return {f: p for f, p in found.items() if p is not None}

    def queue_series(self) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            return {q: self._queues.series(q) for q in self._queues.queues()}


def _share(value: float) -> float:
    """A load between 0 and 1 (the record's float, from the worker: an infinite one made the
    fleet page a 500)."""
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def _changed(before: Service, up: bool, detail: str, now: float) -> Service:
    """The service's new state, keeping the time it entered it when it did not change."""
    since = before.since if before.up == up and before.since else now
    return Service(up, detail, since)
