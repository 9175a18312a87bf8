"""What `droplet bench` measures on a running cluster: single calls (stored and direct), a
two-function DAG, a burst, `client.map`, and on request where a call's time goes."""

from __future__ import annotations

import itertools
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from droplet.client.client import DropletClient
from droplet.errors import DropletError
from droplet.proto import pb

CALL_TIMEOUT_S = 10.0
# The stages a traced plain call stamps, in order: each figure is the time from one to the next.
STAGES = ("client.send", "worker.start", "worker.end", "stored", "client.received")


class BenchError(DropletError):
    """A wrong or missing result, or a cluster that would not start: no figure is trustworthy."""


class Progress:
    """A one-line bar on stderr; silent unless someone is watching, so logs stay clean."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._shown = (-1, "")

    def show(self, label: str, done: int, total: int) -> None:
        filled = 30 * done // max(1, total)
        if not self.enabled or ((filled, label) == self._shown and done < total):
            return  # redraw only when the bar moves: a write per call would skew latency
        self._shown = (filled, label)
        bar = "#" * filled + "." * (30 - filled)
        sys.stderr.write(f"\r[{bar}] {label} {done}/{total}\x1b[K")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    """Median and p99. The p99 is the sample the peers' bench scripts take (sorted, at index
    int(0.99 n)), so that a ratio to theirs compares the same rank: of 300 calls, the third
    slowest (the nearest-rank p99, ceil(0.99 n), was the fourth slowest)."""
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def check(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise BenchError(f"{what}: expected {want!r}, got {got!r}")


def latencies(n: int, call: Callable[[int], Any], want: Callable[[int], Any], what: str,
               progress: Progress) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        got = call(i)
        samples.append((time.perf_counter() - start) * 1e3)
        check(got, want(i), f"{what} {i}")
        progress.show(what, i + 1, n)
    return samples


def warm_up(client: DropletClient, n: int, call: Callable[[int], Any],
            want: Callable[[int], Any], what: str, progress: Progress) -> None:
    """n untimed calls, and more until the workers have published what they learnt of the
    function's run time (their status records, every status_interval_s) and the client has
    read it (once a second): what a quick function's calls travel in (client/routing.py)
    is then what it is in steady state, whatever the fleet's size."""
    learn_s = 1.5 * client.settings.status_interval_s + 1.0
    started = time.monotonic()
    latencies(n, call, want, what, progress)
    i = n
    while time.monotonic() - started < learn_s:
        check(call(i), want(i), f"{what} {i}")
        i += 1


def burst(client: DropletClient, fn: str, n: int, progress: Progress) -> float:
    start = time.perf_counter()
    futures = [client.call(fn, i) for i in range(n)]
    deadline = start + max(60.0, n / 20)
    for i, future in enumerate(futures):
        check(future.get(timeout=max(0.1, deadline - time.perf_counter())), i + 1, f"burst {i}")
        progress.show("burst", i + 1, n)
    return n / (time.perf_counter() - start)


def register_incr(client: DropletClient, tag: str) -> str:
    name = f"bench_incr_{tag}"
    client.register(lambda lib, x: x + 1, name)
    return name


def breakdown(client: DropletClient, fn: str, n: int, progress: Progress) -> dict[str, Any]:
    """Median and p99, in ms, of each stage of a traced plain call (from the stage before)."""
    gaps: dict[str, list[float]] = {}
    for i in range(n):
        future = client.submit(fn, [i], traced=True)
        check(future.get(timeout=CALL_TIMEOUT_S), i + 1, f"traced call {i}")
        stamps = dict(future.trace)
        for before, after in itertools.pairwise(STAGES):
            if before in stamps and after in stamps:
                gaps.setdefault(f"{before} -> {after}", []).append(
                    (stamps[after] - stamps[before]) * 1e3)
        progress.show("traced calls", i + 1, n)
    return _summary(gaps)


def dag_breakdown(client: DropletClient, dag: str, labels: dict[str, str], n: int,
                  progress: Progress) -> dict[str, Any]:
    """The same for the two-function DAG (direct response): every stage in the order the call
    went through them, its functions named by `labels`."""
    gaps: dict[str, list[float]] = {}
    source = next(iter(labels))
    for i in range(n):
        future = client.call_dag(dag, {source: [i]}, direct_response=True, traced=True)
        check(future.get(timeout=CALL_TIMEOUT_S), (i + 1) ** 2, f"traced DAG call {i}")
        named = [(_relabel(stage, labels), at) for stage, at in future.trace]
        for (before, t0), (after, t1) in itertools.pairwise(named):
            gaps.setdefault(f"{before} -> {after}", []).append((t1 - t0) * 1e3)
        progress.show("traced DAG calls", i + 1, n)
    return _summary(gaps)


def _relabel(stage: str, labels: dict[str, str]) -> str:
    name, dot, what = stage.rpartition(".")
    return f"{labels[name]}.{what}" if dot and name in labels else stage


def _summary(gaps: dict[str, list[float]]) -> dict[str, Any]:
    return {stage: dict(zip(("p50_ms", "p99_ms"), percentiles(xs), strict=True))
            for stage, xs in gaps.items()}


def measure(client: DropletClient, counts: dict[str, int], progress: Progress,
            notes: list[str], traced: bool = False,
            samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The figures; with `samples`, also every timed latency in ms (for --plot)."""
    kept: dict[str, list[float]] = {} if samples is None else samples
    tag = uuid.uuid4().hex[:8]
    incr, square, dag = register_incr(client, tag), f"bench_square_{tag}", f"bench_dag2_{tag}"
    client.register(lambda lib, x: x * x, square)
    out: dict[str, Any] = {}
    try:
        pinned = {p.worker_id for p in client.metadata.pins()}
        free = sum(w.id not in pinned for w in client.metadata.workers())
        has_dag = free >= 2
        if has_dag:
            has_dag, code = client.register_dag(dag, [incr, square], [(incr, square)])
            if code is not None and code != pb.NO_RESOURCES:  # lost a race for workers: skip
                raise BenchError(f"registering the DAG failed with error code {code}")
        if not has_dag:
            notes.append(f"DAG figures skipped: a 2-function DAG needs 2 free workers, {free} free")

        def call(i: int) -> Any:
            return client.call(incr, i).get(timeout=CALL_TIMEOUT_S)

        def call_direct(i: int) -> Any:
            return client.call_direct(incr, i).get(timeout=CALL_TIMEOUT_S)

        def call_dag(i: int) -> Any:
            return client.call_dag(dag, {incr: [i]}, direct_response=True,
                                   timeout=CALL_TIMEOUT_S)

        # Each kind of call is timed after untimed calls of its own kind, and direct calls
        # first: a stream of durable calls leaves RabbitMQ (their persistent requests) and
        # etcd busy for seconds after it, and direct calls timed right after one had their
        # p99 at 1.46-1.94 ms, against 0.98-1.14 ms ten seconds later (3,000 calls each).
        warm = counts["warmup"]
        warm_up(client, warm, call_direct, lambda i: i + 1, "warm-up calls", progress)
        kept["direct_call"] = latencies(counts["calls"], call_direct, lambda i: i + 1,
                                        "direct calls", progress)
        out["direct_call_p50_ms"], out["direct_call_p99_ms"] = percentiles(kept["direct_call"])
        latencies(warm, call, lambda i: i + 1, "warm-up stored calls", progress)
        kept["call"] = latencies(counts["calls"], call, lambda i: i + 1, "calls", progress)
        out["call_p50_ms"], out["call_p99_ms"] = percentiles(kept["call"])
        if has_dag:
            latencies(warm, call_dag, lambda i: (i + 1) ** 2, "warm-up DAG calls", progress)
            kept["dag2"] = latencies(counts["dag_calls"], call_dag, lambda i: (i + 1) ** 2,
                                     "DAG calls", progress)
            out["dag2_p50_ms"], out["dag2_p99_ms"] = percentiles(kept["dag2"])
        out["burst_calls_per_s"] = burst(client, incr, counts["burst"], progress)
        progress.show("map", 0, 1)
        start = time.perf_counter()
        results = list(client.map(incr, range(counts["map"])))
        out["map_calls_per_s"] = counts["map"] / (time.perf_counter() - start)
        check(results, [i + 1 for i in range(counts["map"])], "map results")
        if traced:
            out["breakdown"] = breakdown(client, incr, counts["calls"], progress)
            if has_dag:
                out["dag2_breakdown"] = dag_breakdown(
                    client, dag, {incr: "incr", square: "square"}, counts["dag_calls"],
                    progress)
    finally:
        with suppress(DropletError):  # frees the pinned workers of an external cluster
            client.delete_dag(dag)
            for name in (incr, square):
                client.metadata.delete_function(name)
    return out
