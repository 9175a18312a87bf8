"""What a worker ran lately, for the dashboard: a middleware that remembers each run, and a
thread that publishes what it remembers to etcd every couple of seconds.

Why this shape: the worker's hot path must not pay for a dashboard. A run costs the recorder a
few appends under an uncontended lock (no encoding, no I/O); protobuf encoding and the one etcd
put happen on the publisher thread, once per interval and only when something changed, and
that thread lets go of the GIL every few records while it builds (YIELD_EVERY). The
record is bounded (the newest `limit` calls, tracebacks of the newest failures only, cut to a
few KB) and lives under the worker's membership lease, so it disappears with the worker; the
dashboard keeps what it already saw.

Call ids: `after_run` does not carry one. The outcome a worker stores is the very `Value` that
`after_run` was handed, so `after_outcome` finds its run by identity; a run whose outcome is
not stored by this worker (a DAG step that is not the last, a direct response) keeps an empty
call id. The time between the end of a run and its outcome being stored is the call's store
stage. The other stages of `pb.CallStages` (queue wait, reply) are left for the tracer.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from droplet.errors import DropletError
from droplet.middleware import Middleware
from droplet.proto import pb
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the latency histogram each function's totals carry; calls slower
# than the last bound fall in one more bucket.
BUCKET_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0, 300.0)
MAX_CALLS = 1000  # whatever the setting says: one record must stay far below etcd's 1.5 MiB
TRACEBACKS_KEPT = 20  # failures whose traceback is published (the newest)
TRACEBACK_CHARS = 6000  # the end of a traceback says most: its head is cut
MESSAGE_CHARS = 1000
MAX_FUNCTIONS = 500  # functions with totals of their own; the rest are counted together
OTHER_FUNCTIONS = "(other)"
_AWAITING = 256  # runs whose outcome may still be stored (a delivery's worth, and more)
# Records built between two yields of the GIL. Building 200 of them took 0.8-1.3 ms on the
# 2-core VM, every interval, and a thread that holds the GIL that long stalls the worker's
# main thread for all of it (CPython lets a waiting thread in only after 5 ms): traced, a call
# that arrived then took a millisecond longer. A yield every 25 bounds that to ~0.1 ms.
YIELD_EVERY = 25


@dataclass(slots=True)
class _Run:
    seq: int
    function: str
    started_at: float
    run_s: float
    ended: float  # perf_counter at the end of the run
    status: int = pb.NO_ERROR
    error: str = ""
    traceback: str = ""
    exception_type: str = ""
    call_id: str = ""
    store_s: float | None = None


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    errors: int = 0
    run_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_BOUNDS_S) + 1))


class CallRecorder(Middleware):
    """A worker middleware; `start` publishes under recent/<worker id> until `stop`."""

    def __init__(self, kv: KV, keys: StoreKeys, limit: int = 200,
                 interval_s: float = 2.0) -> None:
        self._kv = kv
        self._keys = keys
        self._limit = max(1, min(limit, MAX_CALLS))
        self._interval_s = max(0.1, interval_s)
        self._lock = threading.Lock()
        self._runs: deque[_Run] = deque(maxlen=self._limit)
        self._totals: dict[str, _Totals] = {}
        self._awaiting: OrderedDict[int, tuple[pb.Value, _Run]] = OrderedDict()
        self._seq = 0
        self._changed = False
        self._started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker_id = ""
        self._incarnation = ""
        self._lease: Callable[[], int | None] = lambda: None
        self._published_lease: int | None = None

    # -- the hot path ------------------------------------------------------------------------

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        ended = time.perf_counter()
        run = _Run(0, function, time.time() - seconds, seconds, ended)
        if outcome.type == pb.ERROR:
            info = pb.ErrorInfo.FromString(outcome.body)
            run.status = info.code or pb.EXECUTION_ERROR
            run.error = info.message[:MESSAGE_CHARS]
            run.traceback = info.traceback
            run.exception_type = info.exception_type
        with self._lock:
            self._seq += 1
            run.seq = self._seq
            self._runs.append(run)
            totals = self._totals.get(function)
            if totals is None:
                name = function if len(self._totals) < MAX_FUNCTIONS else OTHER_FUNCTIONS
                totals = self._totals.setdefault(name, _Totals())
            totals.calls += 1
            totals.errors += run.status != pb.NO_ERROR
            totals.run_s += seconds
            totals.buckets[bisect.bisect_left(BUCKET_BOUNDS_S, seconds)] += 1
            self._awaiting[id(outcome)] = (outcome, run)  # holding it keeps its id unique
            if len(self._awaiting) > _AWAITING:
                self._awaiting.popitem(last=False)
            self._changed = True

    def after_outcome(self, call_id: str, outcome: pb.Value) -> None:
        with self._lock:
            found = self._awaiting.pop(id(outcome), None)
            if found is None or found[0] is not outcome:
                return
            run = found[1]
            run.call_id = call_id
            run.store_s = time.perf_counter() - run.ended
            self._changed = True

    # -- publishing --------------------------------------------------------------------------

    def start(self, worker_id: str, incarnation: str, lease: Callable[[], int | None]) -> None:
        """Publishes every interval under `lease()` (the worker's membership lease: None while
        the worker is not registered, and a new id after it registered again)."""
        self._worker_id = worker_id
        self._incarnation = incarnation
        self._lease = lease
        self._thread = threading.Thread(target=self._loop, daemon=True, name="recorder")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.publish()
            except DropletError as exc:  # etcd away, or the lease just expired: next time
                log.debug("publishing recent calls failed: %s", exc)
                self._changed = True

    def publish(self) -> bool:
        """Writes the record when something changed (or the lease did); True when it wrote."""
        lease = self._lease()
        if lease is None or not (self._changed or lease != self._published_lease):
            return False
        record = self.record()
        self._kv.put(self._keys.recent_calls(self._worker_id), record.SerializeToString(), lease)
        self._published_lease = lease
        return True

    def record(self) -> pb.RecentCalls:
        """The bounded record of what ran (taken under the lock, encoded outside it)."""
        with self._lock:
            runs = list(self._runs)
            totals = [(name, t.calls, t.errors, t.run_s, list(t.buckets))
                      for name, t in self._totals.items()]
            self._changed = False
        failures = [r.seq for r in runs if r.status != pb.NO_ERROR][-TRACEBACKS_KEPT:]
        with_traceback = set(failures)
        record = pb.RecentCalls(
            worker_id=self._worker_id, incarnation=self._incarnation,
            started_at=self._started_at, published_at=time.time(),
            bucket_bounds_s=BUCKET_BOUNDS_S, interval_s=self._interval_s,
        )
        for index, run in enumerate(runs, 1):
            if index % YIELD_EVERY == 0:
                time.sleep(0)  # lets the main thread have the GIL (see YIELD_EVERY)
            stages = pb.CallStages(run_s=run.run_s)
            if run.store_s is not None:
                stages.store_s = run.store_s
            traceback = run.traceback if run.seq in with_traceback else ""
            if len(traceback) > TRACEBACK_CHARS:
                traceback = "...\n" + traceback[-TRACEBACK_CHARS:]
            record.calls.append(pb.CallRecord(
                seq=run.seq, call_id=run.call_id, function=run.function,
                started_at=run.started_at, status=run.status,  # type: ignore[arg-type]
                error=run.error, traceback=traceback, exception_type=run.exception_type,
                stages=stages,
            ))
        for name, calls, errors, run_s, buckets in totals:
            record.totals.append(pb.FunctionTotals(function=name, calls=calls, errors=errors,
                                                   run_s=run_s, buckets=buckets))
        return record
