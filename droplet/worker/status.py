"""What a worker tells the fleet about itself: the status record kept under its lease.

Schedulers place calls and pins from these records (load, cached keys, pinned function), and
`droplet status` shows them. The incarnation is new at every process start, so a worker that
restarts under the same id shows as a new process (claims of the old one are settled). Writing
the record is also where a stale local pin is dropped: a scheduler moved it while this worker
was cut off from etcd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from droplet.errors import DropletError
from droplet.proto import pb
from droplet.worker.cache import ValueCache
from droplet.worker.handlers import WorkerState

log = logging.getLogger(__name__)

# The cores this process may run on: with the host, what tells a client how many calls the
# fleet can really run at once (client/routing.py), however many workers share those cores.
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


class StatusReport:
    def __init__(self, state: WorkerState, cache: ValueCache, incarnation: str,
                 interval_s: float, read_pin: Callable[[], pb.PinRecord | None],
                 metrics_port: Callable[[], int],
                 running_since: Callable[[], float | None] = lambda: None,
                 quick_functions: Callable[[], list[str]] = list,
                 slow_functions: Callable[[], list[str]] = list) -> None:
        self._state = state
        self._cache = cache
        self.incarnation = incarnation
        self._interval_s = interval_s
        self._read_pin = read_pin
        self._metrics_port = metrics_port
        self._running_since = running_since  # a run in progress counts as busy already
        self._quick_functions = quick_functions
        self._slow_functions = slow_functions
        self.started_at = time.time()
        self.in_hand = 0  # deliveries taken and not ended yet: the load the status reports
        self._busy_s = 0.0
        self._window_start = time.monotonic()
        self._utilisation = 0.0

    def busy(self, seconds: float) -> None:
        self._busy_s += seconds

    def record(self) -> bytes:
        now = time.monotonic()
        window = now - self._window_start
        if window >= self._interval_s:
            self._utilisation = min(1.0, self._busy_s / window)
            self._busy_s = 0.0
            self._window_start = now
        utilisation = self._utilisation
        since = self._running_since()
        if since is not None:  # a call running now: busy, whatever the last window said
            running = now - max(since, self._window_start - self._interval_s)
            utilisation = max(utilisation, min(1.0, running / max(self._interval_s, 1e-3)))
        state = self._state
        if state.pinned is not None:
            try:
                record = self._read_pin()
            except DropletError:
                record = pb.PinRecord(dag_name=state.pinned[0],
                                      function_name=state.pinned[1])  # unknown: keep it
            if record is None or (record.dag_name, record.function_name) != state.pinned:
                log.warning("pin %s was moved away from this worker", state.pinned)
                state.pinned = None
                state.pinned_dag = None
        dag, function = state.pinned or ("", "")
        status = pb.WorkerStatus(
            id=state.worker_id, host=socket.gethostname(), pid=os.getpid(),
            pinned_dag=dag, pinned_function=function,
            cached_keys=self._cache.keys(), utilisation=utilisation,
            queue_depth=max(self.in_hand, 1 if since is not None else 0),
            started_at=self.started_at,
            updated_at=time.time(), calls_total=state.calls_total,
            errors_total=state.errors_total, metrics_port=self._metrics_port(),
            incarnation=self.incarnation, resources=state.resources, cpus=CPUS,
            quick_functions=self._quick_functions(), slow_functions=self._slow_functions(),
        )
        return status.SerializeToString()
