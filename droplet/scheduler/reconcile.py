"""The admin loop's periodic work: heal pins, move what dead workers left behind, sweep
orphaned chunks, and measure the fleet. Level-triggered and idempotent: any number of
schedulers run it at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from droplet.broker.interface import BrokerConnection, ConnectionFactory
from droplet.errors import DropletError
from droplet.metrics import Metrics
from droplet.scheduler import healing
from droplet.scheduler.dags import PinPort
from droplet.scheduler.reaper import Reaper
from droplet.scheduler.state import SchedulerState
from droplet.settings import Settings
from droplet.store.metadata import Metadata
from droplet.store.values import ValueStore

log = logging.getLogger(__name__)
T = TypeVar("T")

_INTERVAL_S = 2.0
_SWEEP_INTERVAL_S = 60.0
# Chunks announced and never linked for this long belong to a writer that died.
PENDING_BLOB_AGE_S = 3600.0


class Reconciler:
    def __init__(self, settings: Settings, state: SchedulerState, metadata: Metadata,
                 values: ValueStore, reaper: Reaper, metrics: Metrics,
                 connect: ConnectionFactory) -> None:
        self._settings = settings
        self._state = state
        self._metadata = metadata
        self._values = values
        self._reaper = reaper
        self._metrics = metrics
        self._connect = connect
        self._inspector: BrokerConnection | None = None
        self.fleet_changed = threading.Event()
        self._next_run = 0.0
        self._next_sweep = time.monotonic() + _SWEEP_INTERVAL_S

    def maybe_run(self, pins: PinPort) -> None:
        if self.fleet_changed.is_set() or time.monotonic() >= self._next_run:
            self.fleet_changed.clear()
            self.run(pins)
            self._next_run = time.monotonic() + _INTERVAL_S

    def run(self, pins: PinPort) -> None:
        """Moves pins off dead workers and what dead workers left in their queues. Each
        step on its own: one that fails (etcd away, a garbage key) does not stop the others."""
        self._measure()
        self._step("healing pins", lambda: self._heal(pins))
        dead: dict[str, bytes] = self._step("listing dead workers", self._reaper.dead_members,
                                            {})
        for worker_id, entry in dead.items():
            moved = self._step(f"settling dead worker {worker_id}",
                               partial(self._reaper.reap, worker_id, entry), 0)
            if moved:
                log.info("moved %d messages left by dead worker %s", moved, worker_id)
        if moved := self._step("settling claims", self._reaper.settle_claims, 0):
            log.info("moved %d long calls held by dead workers", moved)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + _SWEEP_INTERVAL_S
            swept = self._step("sweeping orphaned chunks",
                               lambda: self._values.blobs.sweep_pending(PENDING_BLOB_AGE_S), 0)
            if swept:
                log.info("deleted %d orphaned large values", swept)

    def _heal(self, pins: PinPort) -> None:
        for action in healing.heal_pins(self._state, self._metadata, pins):
            log.info("healing: %s", action)

    @staticmethod
    def _step(what: str, action: Callable[[], T], failed: T | None = None) -> T:
        try:
            return action()
        except DropletError as exc:
            log.warning("%s failed, will retry: %s", what, exc)
        except Exception:
            log.exception("%s failed, will retry", what)
        return failed  # type: ignore[return-value]

    def _measure(self) -> None:
        """Fleet gauges, and the depth of the shared queues (through a connection of its
        own: inspecting a queue can close a channel)."""
        self._metrics.workers.set(len(self._state.workers))
        self._metrics.pins.set(len(self._state.pins))
        if self._metrics.port == 0:
            return
        names = self._state.names
        try:
            if self._inspector is None or not self._inspector.is_open:
                self._inspector = self._connect()
            for queue in (names.calls, names.admin, names.work, names.dead):
                depth = self._inspector.queue_depth(queue)
                if depth is not None:
                    self._metrics.queue_depth.labels(queue).set(depth)
        except DropletError as exc:
            log.debug("queue depths unavailable: %s", exc)
            self._inspector = None
