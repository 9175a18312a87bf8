"""The scheduler's view of the fleet: etcd mirrors of workers, pins, DAGs and schedulers,
applied to its SchedulerState, so that the call path never reads etcd."""

from __future__ import annotations

from collections.abc import Callable

from droplet.scheduler import policy
from droplet.scheduler.state import SchedulerState
from droplet.store.kv import KV
from droplet.store.metadata import Metadata, parse_dag_record, parse_pin, parse_worker
from droplet.store.mirror import Listener, PrefixMirror


class FleetView:
    def __init__(self, kv: KV, metadata: Metadata, state: SchedulerState) -> None:
        self._kv = kv
        self._metadata = metadata
        self._state = state
        self._mirrors: list[PrefixMirror] = []
        self._on_change: Callable[[], None] = lambda: None
        self._on_count: Callable[[], None] = lambda: None

    def start(self, on_change: Callable[[], None],
              on_count: Callable[[], None] = lambda: None) -> None:
        """Mirrors the fleet; on_change() runs when a worker or scheduler goes away, and
        on_count() when a worker joins or leaves this view (its record tells how many it
        sees, which a cluster's start-up waits on: etcd listing a worker is not enough)."""
        self._on_change = on_change
        self._on_count = on_count
        keys = self._metadata.keys
        self._mirror(keys.workers, self._on_worker)
        self._mirror(keys.pins, self._on_pin)
        self._mirror(keys.dags, self._on_dag)
        self._mirror(keys.schedulers, self._on_scheduler)

    def close(self) -> None:
        for mirror in self._mirrors:
            mirror.close()

    def _mirror(self, prefix: str, listener: Listener) -> None:
        mirror = PrefixMirror(self._kv, prefix)
        mirror.on_change(listener)
        mirror.start()
        self._mirrors.append(mirror)

    def track_revision(self) -> None:
        state = self._state
        state.revision = max([state.revision, *(m.revision for m in self._mirrors)])

    def refresh(self) -> None:
        """Reads workers and pins straight from etcd instead of waiting for the watches. A
        worker it adds is counted now (on_count): the watch's event for it will find it
        known already."""
        known = len(self._state.workers)
        for status in self._metadata.workers():
            self._state.workers.setdefault(status.id, status)
        if len(self._state.workers) != known:
            self._on_count()
        for pin in self._metadata.pins():
            self._state.pins.setdefault(pin.worker_id, pin)

    def _on_worker(self, name: str, value: bytes | None) -> None:
        state = self._state
        if value is None:
            if state.workers.pop(name, None) is not None:
                self._on_count()
            state.backoff.discard(name)
            self._on_change()
        else:
            status = parse_worker(value)
            previous = state.workers.get(name)
            state.workers[name] = status
            if previous is None:
                self._on_count()
            if status.utilisation >= policy.BACKOFF_UTILISATION:
                state.backoff.add(name)
            else:
                state.backoff.discard(name)
            if previous is not None and previous.incarnation != status.incarnation:
                self._on_change()  # restarted under the same id: its old claims are orphans
        self.track_revision()

    def _on_pin(self, name: str, value: bytes | None) -> None:
        if value is None:
            self._state.pins.pop(name, None)
        else:
            self._state.pins[name] = parse_pin(value)

    def _on_scheduler(self, name: str, value: bytes | None) -> None:
        if value is None:
            self._state.schedulers.discard(name)
            self._on_change()
        else:
            self._state.schedulers.add(name)

    def _on_dag(self, name: str, value: bytes | None) -> None:
        if value is None:
            self._state.dags.pop(name, None)
        else:
            self._state.dags[name] = parse_dag_record(value)



