"""What the dashboard remembers between samples: queue depths over time, per-function totals
turned into rates, and the recent calls of every worker merged into one log.

Why the dashboard keeps history itself: workers publish only totals since they started and a
bounded ring of their newest calls, and a worker's record vanishes with its lease. Rates come
from the differences between successive records; calls, errors and tracebacks already seen stay
here after their worker died. Everything is bounded (a window of minutes, a few thousand calls).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from droplet.proto import pb

WINDOW_S = 15 * 60.0  # the longest view of any chart
BIN_S = 5.0  # charts plot 5-second bins
CALLS_KEPT = 3000
ERRORS_KEPT = 300


# -- queues -----------------------------------------------------------------------------------


class QueueHistory:
    """Depths sampled over time; the rate is the change per second over the last ~10 s."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def add(self, now: float, depths: dict[str, int | None]) -> None:
        for queue, depth in depths.items():
            if depth is None:
                continue
            samples = self._samples.setdefault(queue, deque())
            samples.append((now, depth))
            while samples and samples[0][0] < now - self._window_s:
                samples.popleft()

    def rate(self, queue: str, span_s: float = 10.0) -> float | None:
        """Messages per second the queue grew (negative: shrank), None before two samples."""
        samples = self._samples.get(queue)
        if not samples or len(samples) < 2:
            return None
        t1, d1 = samples[-1]
        t0, d0 = next(((t, d) for t, d in samples if t >= t1 - span_s), samples[0])
        if t0 == t1:
            t0, d0 = samples[-2]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def series(self, queue: str) -> list[tuple[float, float]]:
        return [(t, float(d)) for t, d in self._samples.get(queue, ())]

    def queues(self) -> list[str]:
        return list(self._samples)


# -- per-function rates and latency ------------------------------------------------------------


@dataclass
class Bin:
    calls: float = 0.0
    errors: float = 0.0
    run_s: float = 0.0
    buckets: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Point:
    """One chart bin of one function: calls and errors per second, latency in seconds."""

    at: float
    calls_per_s: float
    errors_per_s: float
    mean_s: float
    p50_s: float
    p99_s: float


@dataclass
class _Stream:
    incarnation: str
    published_at: float
    totals: dict[str, pb.FunctionTotals]
    quiet_until: float  # no call of this worker before this time is missing from totals


class FunctionHistory:
    """Per-function bins built from the totals each worker publishes. A worker writes its
    record within an interval of running calls, and not at all while it is idle; so an
    increase is spread evenly over the time since the worker was last known quiet, and bins
    do not jump with the rhythm of publishing. A bin is shown once every record that could
    still add to it has been seen."""

    def __init__(self, watching_since: float, window_s: float = WINDOW_S,
                 bin_s: float = BIN_S) -> None:
        self._since = watching_since
        self._window_s = window_s
        self._bin_s = bin_s
        self._streams: dict[str, _Stream] = {}
        self._bins: dict[str, dict[int, Bin]] = {}
        self._settled = 0.0  # bins ending before this are complete
        self.bounds: tuple[float, ...] = ()

    def add(self, record: pb.RecentCalls, seen_at: float) -> None:
        """A worker's record, as read at seen_at (the same record may come again). One whose
        times are not finite, or run ahead of seen_at by more than the window, is passed over:
        its calls cannot be placed in time here (and an infinite one made the sampler fail)."""
        times = (record.started_at, record.published_at, record.interval_s)
        if not all(map(math.isfinite, times)) or record.published_at > seen_at + self._window_s:
            return
        worker = record.worker_id
        current = {t.function: t for t in record.totals}
        self.bounds = tuple(record.bucket_bounds_s) or self.bounds
        # Calls are published within an interval (and a put) of running: a record unchanged
        # at seen_at means nothing ran before about this.
        quiet = seen_at - 1.5 * (record.interval_s or 2.0)
        previous = self._streams.get(worker)
        if previous is None or previous.incarnation != record.incarnation:
            if record.started_at < self._since:
                # Running before we watched: its totals so far are a baseline, not a burst.
                self._streams[worker] = _Stream(record.incarnation, record.published_at,
                                                current, max(record.published_at, quiet))
                return
            previous = _Stream(record.incarnation, record.started_at, {}, record.started_at)
        if record.published_at <= previous.published_at:
            previous.quiet_until = max(previous.quiet_until, quiet)
            self._settled = max(self._settled, quiet)
            return
        start = max(previous.published_at, min(previous.quiet_until, record.published_at))
        for name, totals in current.items():
            self._spread(name, start, record.published_at,
                         _delta(totals, previous.totals.get(name)))
        self._streams[worker] = _Stream(record.incarnation, record.published_at, current,
                                        record.published_at)
        self._settled = max(self._settled, record.published_at)
        self._trim(record.published_at)

    def _spread(self, function: str, start: float, end: float, delta: Bin) -> None:
        if delta.calls <= 0:
            return
        bins = self._bins.setdefault(function, {})
        # Spread over the whole span, but only the bins of the last window are kept: a span
        # of years (a clock far off) made millions of bins, and the sampler hung on them.
        first = int(max(start, end - self._window_s) // self._bin_s)
        last = int(end // self._bin_s)
        for index in range(first, last + 1):
            lo, hi = max(start, index * self._bin_s), min(end, (index + 1) * self._bin_s)
            share = (hi - lo) / (end - start) if end > start else 1.0
            if share <= 0:
                continue
            target = bins.setdefault(index, Bin(buckets=[0.0] * len(delta.buckets)))
            target.calls += delta.calls * share
            target.errors += delta.errors * share
            target.run_s += delta.run_s * share
            if len(target.buckets) != len(delta.buckets):
                target.buckets = [0.0] * len(delta.buckets)
            for i, count in enumerate(delta.buckets):
                target.buckets[i] += count * share

    def _trim(self, now: float) -> None:
        oldest = int((now - self._window_s) // self._bin_s)
        for bins in self._bins.values():
            for index in [i for i in bins if i < oldest]:
                del bins[index]

    def functions(self) -> list[str]:
        return sorted(name for name, bins in self._bins.items() if bins)

    def points(self, function: str, since: float) -> list[Point]:
        out = []
        for index, b in sorted(self._bins.get(function, {}).items()):
            at = (index + 0.5) * self._bin_s
            if at < since or b.calls <= 0 or (index + 1) * self._bin_s > self._settled:
                continue
            out.append(Point(at, b.calls / self._bin_s, b.errors / self._bin_s,
                             b.run_s / b.calls, quantile(self.bounds, b.buckets, 0.5),
                             quantile(self.bounds, b.buckets, 0.99)))
        return out

    def summary(self, function: str, since: float) -> Point | None:
        """All bins since `since` together (rates over that span)."""
        chosen = [b for i, b in self._bins.get(function, {}).items()
                  if (i + 0.5) * self._bin_s >= since]
        calls = sum(b.calls for b in chosen)
        if calls <= 0:
            return None
        span = max(self._bin_s, len(chosen) * self._bin_s)
        width = max((len(b.buckets) for b in chosen), default=0)
        merged = [sum(b.buckets[i] for b in chosen if len(b.buckets) == width)
                  for i in range(width)]
        return Point(since, calls / span, sum(b.errors for b in chosen) / span,
                     sum(b.run_s for b in chosen) / calls, quantile(self.bounds, merged, 0.5),
                     quantile(self.bounds, merged, 0.99))


def _delta(now: pb.FunctionTotals, before: pb.FunctionTotals | None) -> Bin:
    if before is None or now.calls < before.calls:
        return Bin(now.calls, now.errors, now.run_s, [float(c) for c in now.buckets])
    old = list(before.buckets)
    return Bin(
        now.calls - before.calls, now.errors - before.errors, now.run_s - before.run_s,
        [float(c - (old[i] if i < len(old) else 0)) for i, c in enumerate(now.buckets)],
    )


def quantile(bounds: Sequence[float], buckets: Sequence[float], q: float) -> float:
    """The upper bound of the bucket holding quantile q (the last bound for the overflow
    bucket): a latency that is at most this, as Prometheus histograms estimate it."""
    total = sum(buckets)
    if total <= 0 or not bounds:
        return math.nan
    running = 0.0
    for i, count in enumerate(buckets):
        running += count
        if running >= q * total - 1e-9:
            return bounds[min(i, len(bounds) - 1)]
    return bounds[-1]


# -- recent calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    worker: str
    seq: int
    call_id: str
    function: str
    started_at: float
    status: str  # "OK" or the error code's name
    error: str
    traceback: str
    exception_type: str
    stages: dict[str, float]  # stage name -> seconds, only the measured ones

    @property
    def failed(self) -> bool:
        return self.status != "OK"

    @property
    def duration_s(self) -> float:
        """Client to client when the tracer measured it, else the stages this worker saw."""
        if "total_s" in self.stages:
            return self.stages["total_s"]
        return sum(self.stages.values())


STAGES = ("queue_wait_s", "run_s", "store_s", "reply_s", "total_s")


class CallLog:
    """Recent calls of every worker, newest last, each seen once (per worker process)."""

    def __init__(self) -> None:
        self._calls: deque[Call] = deque(maxlen=CALLS_KEPT)
        self._errors: deque[Call] = deque(maxlen=ERRORS_KEPT)
        self._last_seq: dict[tuple[str, str], int] = {}
        # Calls first seen before their outcome was stored (no call id yet): a later record
        # brings the id, and the call seen earlier is completed with it.
        self._unsettled: dict[tuple[str, str, int], Call] = {}

    def add(self, record: pb.RecentCalls) -> int:
        """Takes the calls of a record not seen before, and the call ids of calls seen
        before without one; returns how many were new."""
        stream = (record.worker_id, record.incarnation)
        last = self._last_seq.get(stream, 0)
        new = [c for c in record.calls if c.seq > last]
        for raw in record.calls:
            if raw.seq <= last and raw.call_id:
                self._settle((*stream, raw.seq), _call(record.worker_id, raw))
        for raw in new:
            call = _call(record.worker_id, raw)
            self._calls.append(call)
            if call.failed:
                self._errors.append(call)
            if not call.call_id:
                self._unsettled[(*stream, raw.seq)] = call
                while len(self._unsettled) > CALLS_KEPT:
                    del self._unsettled[next(iter(self._unsettled))]
        if new:
            self._last_seq[stream] = new[-1].seq
        return len(new)

    def _settle(self, key: tuple[str, str, int], settled: Call) -> None:
        seen = self._unsettled.pop(key, None)
        if seen is None:
            return
        for kept in (self._calls, self._errors):
            for index, call in enumerate(kept):
                if call is seen:
                    kept[index] = settled
                    break

    def calls(self) -> list[Call]:
        return list(self._calls)

    def errors(self) -> list[Call]:
        return list(self._errors)


def _call(worker: str, raw: pb.CallRecord) -> Call:
    stages = {name: getattr(raw.stages, name) for name in STAGES if raw.stages.HasField(name)}
    status = "OK" if raw.status == pb.NO_ERROR else _code_name(raw.status)
    return Call(worker, raw.seq, raw.call_id, raw.function, raw.started_at, status, raw.error,
                raw.traceback, raw.exception_type, stages)


def _code_name(code: int) -> str:
    return pb.ErrorCode.Name(code) if code in pb.ErrorCode.values() else str(code)


def newest_first(calls: Iterable[Call]) -> list[Call]:
    return sorted(calls, key=lambda c: c.started_at, reverse=True)
