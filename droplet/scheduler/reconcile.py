"""The admin loop's periodic work: heal pins, move what dead workers left behind, sweep
orphaned chunks, and measure the fleet. Level-triggered and idempotent: any number of
schedulers run it at once."""

from __future__ import annotations

import logging
import threading
import time

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
        """Moves pins off dead workers and what dead workers left in their queues."""
        self._measure()
        try:
            for action in healing.heal_pins(self._state, self._metadata, pins):
                log.info("healing: %s", action)
            for worker_id, entry in self._reaper.dead_members().items():
                if moved := self._reaper.reap(worker_id, entry):
                    log.info("moved %d messages left by dead worker %s", moved, worker_id)
            if moved := self._reaper.settle_claims():
                log.info("moved %d long calls held by dead workers", moved)
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + _SWEEP_INTERVAL_S
                if swept := self._values.blobs.sweep_pending(PENDING_BLOB_AGE_S):
                    log.info("deleted %d orphaned large values", swept)
        except DropletError as exc:
            log.warning("reconciliation failed, will retry: %s", exc)

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
