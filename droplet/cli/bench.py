"""`droplet bench`: latency and throughput of calls and DAGs, end to end through the broker.

By default the figures come from a throw-away cluster in a fresh namespace, so a bench never
loads, pins or litters a cluster someone is using; `--external` measures the configured one.
Absolute figures say little on their own, so `--floor` also runs a raw-pika script and reports
how far above that floor (the same number of broker hops, no Droplet) each figure is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import droplet
from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.cli.etcd_local import LocalEtcd, etcd_answers
from droplet.client.client import DropletClient
from droplet.errors import DropletError
from droplet.proto import pb
from droplet.settings import Settings

FULL = {"calls": 300, "dag_calls": 300, "burst": 2000, "map": 5000, "warmup": 50}
QUICK = {"calls": 20, "dag_calls": 20, "burst": 100, "map": 200, "warmup": 5}
# Fewer samples than this make p99 the maximum of a handful: noise, not a tail.
MIN_LATENCY_SAMPLES = 300
READY_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 10.0


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
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[math.ceil(0.99 * len(ordered)) - 1]


def _check(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise BenchError(f"{what}: expected {want!r}, got {got!r}")


@contextmanager
def local_cluster(base: Settings, workers: int, workdir: Path) -> Iterator[Settings]:
    """One scheduler and `workers` workers in a fresh namespace; everything they created (keys,
    queues, a private etcd) is gone afterwards."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    etcd: LocalEtcd | None = None
    endpoint = base.etcd_endpoints[0]
    if not etcd_answers(endpoint):
        etcd = LocalEtcd(workdir / f"etcd-{namespace}", log_path=workdir / f"{namespace}-etcd.log")
        endpoint = etcd.start().endpoint
    settings = base.with_(namespace=namespace, etcd_endpoints=(endpoint,))
    logs = workdir / namespace
    logs.mkdir()
    cluster = LocalCluster(settings, logs)
    try:
        cluster.start(workers)
        try:
            cluster.wait_ready(workers, READY_TIMEOUT_S)
        except DropletError as exc:
            raise BenchError(str(exc)) from None
        yield settings
    finally:
        cluster.stop()
        try:
            purge_namespace(settings, cluster.worker_ids())
        except DropletError as exc:  # must not hide the error that ended the bench
            print(f"droplet bench: clean-up of {namespace} failed: {exc}", file=sys.stderr)
        if etcd is not None:
            etcd.stop()


def _latencies(n: int, call: Callable[[int], Any], want: Callable[[int], Any], what: str,
               progress: Progress) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        got = call(i)
        samples.append((time.perf_counter() - start) * 1e3)
        _check(got, want(i), f"{what} {i}")
        progress.show(what, i + 1, n)
    return samples


def _burst(client: DropletClient, fn: str, n: int, progress: Progress) -> float:
    start = time.perf_counter()
    futures = [client.call(fn, i) for i in range(n)]
    deadline = start + max(60.0, n / 20)
    for i, future in enumerate(futures):
        _check(future.get(timeout=max(0.1, deadline - time.perf_counter())), i + 1, f"burst {i}")
        progress.show("burst", i + 1, n)
    return n / (time.perf_counter() - start)


def _register_incr(client: DropletClient, tag: str) -> str:
    name = f"bench_incr_{tag}"
    client.register(lambda lib, x: x + 1, name)
    return name


def measure(client: DropletClient, counts: dict[str, int], progress: Progress,
            notes: list[str], samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The figures; with `samples`, also every timed latency in ms (for --plot)."""
    kept: dict[str, list[float]] = {} if samples is None else samples
    tag = uuid.uuid4().hex[:8]
    incr, square, dag = _register_incr(client, tag), f"bench_square_{tag}", f"bench_dag2_{tag}"
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

        def call_dag(i: int) -> Any:
            return client.call_dag(dag, {incr: [i]}, direct_response=True,
                                   timeout=CALL_TIMEOUT_S)

        warm = counts["warmup"]
        _latencies(warm, call, lambda i: i + 1, "warm-up calls", progress)
        if has_dag:
            _latencies(warm, call_dag, lambda i: (i + 1) ** 2, "warm-up DAG calls", progress)
        kept["call"] = _latencies(counts["calls"], call, lambda i: i + 1, "calls", progress)
        out["call_p50_ms"], out["call_p99_ms"] = percentiles(kept["call"])
        if has_dag:
            kept["dag2"] = _latencies(counts["dag_calls"], call_dag, lambda i: (i + 1) ** 2,
                                      "DAG calls", progress)
            out["dag2_p50_ms"], out["dag2_p99_ms"] = percentiles(kept["dag2"])
        out["burst_calls_per_s"] = _burst(client, incr, counts["burst"], progress)
        mapper = getattr(client, "map", None)
        if mapper is not None:
            progress.show("map", 0, 1)
            start = time.perf_counter()
            results = list(mapper(incr, range(counts["map"])))
            out["map_calls_per_s"] = counts["map"] / (time.perf_counter() - start)
            _check(results, [i + 1 for i in range(counts["map"])], "map results")
        else:
            notes.append("map_calls_per_s omitted: this client has no map()")
    finally:
        with suppress(DropletError):  # frees the pinned workers of an external cluster
            client.delete_dag(dag)
            for name in (incr, square):
                client.metadata.delete_function(name)
    return out


def _sweep_one(base: Settings, workers: int, counts: dict[str, int], workdir: Path,
               progress: Progress) -> float:
    with local_cluster(base, workers, workdir) as settings, droplet.connect(
        settings=settings
    ) as client:
        incr = _register_incr(client, uuid.uuid4().hex[:8])
        _latencies(counts["warmup"], lambda i: client.call(incr, i).get(timeout=CALL_TIMEOUT_S),
                   lambda i: i + 1, f"warm-up {workers} workers", progress)
        return _burst(client, incr, counts["burst"], progress)


def run_floor(path: str, broker_url: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_BROKER=broker_url)
    done = subprocess.run([sys.executable, path], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    with suppress(json.JSONDecodeError, IndexError):
        floor = json.loads(lines[-1])
        if isinstance(floor, dict):
            return floor
    raise BenchError(f"floor script {path} (exit {done.returncode}) printed no JSON object "
                     f"as its last line: {(done.stderr or done.stdout)[-500:]}")


def _ratios(out: dict[str, Any]) -> None:
    floor = out.get("floor", {})
    pairs = [("call_p50_vs_floor3", "call_p50_ms", "hops3_p50_ms"),
             ("dag2_p50_vs_floor3", "dag2_p50_ms", "hops3_p50_ms"),
             ("burst_vs_floor3", "burst_calls_per_s", "hops3_burst_msgs_per_s")]
    for key, ours, theirs in pairs:
        if ours in out and floor.get(theirs):
            out[key] = out[ours] / floor[theirs]


def _counts(args: argparse.Namespace) -> dict[str, int]:
    counts = dict(QUICK if args.quick else FULL)
    for key in counts:
        if getattr(args, key, None) is not None:
            counts[key] = getattr(args, key)
    if not args.quick and min(counts["calls"], counts["dag_calls"]) < MIN_LATENCY_SAMPLES:
        raise BenchError(f"--calls and --dag-calls need at least {MIN_LATENCY_SAMPLES} "
                         "samples for a p99 (or use --quick)")
    if counts["warmup"] < 0 or min(v for k, v in counts.items() if k != "warmup") < 1:
        raise BenchError("counts must be positive")
    return counts


def _table(out: dict[str, Any]) -> list[str]:
    c = out["cluster"]
    lines = [f"droplet bench: {c['schedulers']} scheduler(s), {c['workers']} worker(s), "
             f"namespace {c['namespace']}{' (external)' if c['external'] else ''}"]
    def unit(key: str) -> str:
        return "ms" if key.endswith("_ms") else "/s" if key.endswith("_per_s") else "x"

    rows = [(k, v, unit(k)) for k, v in out.items() if isinstance(v, float)]
    rows += [(f"floor {k}", v, unit(k)) for k, v in out.get("floor", {}).items()
             if isinstance(v, (int, float))]
    rows += [(f"sweep {n} workers", v, "calls/s") for n, v in out.get("sweep", {}).items()]
    lines += [f"  {name:<28}{value:>12.3f} {unit}" for name, value, unit in rows]
    return lines + [f"  note: {note}" for note in out.get("notes", [])]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    counts = _counts(args)
    try:
        sweep = [int(n) for n in args.sweep.split(",") if n.strip()] if args.sweep else []
    except ValueError:
        raise BenchError(f"--sweep takes worker counts like 1,2,4, not {args.sweep!r}") from None
    if args.workers < 1 or any(n < 1 for n in sweep):
        raise BenchError("worker counts must be at least 1")
    if sweep and args.external:
        raise BenchError("--sweep starts its own clusters: it cannot be used with --external")
    progress = Progress(args.progress or sys.stderr.isatty())
    if args.plot:
        from droplet.cli.bench_plot import check_plot_path

        check_plot_path(args.plot)
    out: dict[str, Any] = {}
    notes: list[str] = []
    samples: dict[str, list[float]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="droplet-bench-"))
    finished = False
    try:
        if args.floor:  # first, while no cluster of ours is loading the machine
            progress.show("floor", 0, 1)
            out["floor"] = run_floor(args.floor, settings.broker_url)
        cluster: AbstractContextManager[Settings] = (
            nullcontext(settings) if args.external
            else local_cluster(settings, args.workers, workdir))
        with cluster as used, droplet.connect(settings=used) as client:
            out["cluster"] = {"workers": len(client.metadata.workers()),
                              "schedulers": len(client.metadata.schedulers()),
                              "external": bool(args.external), "namespace": used.namespace}
            out.update(measure(client, counts, progress, notes, samples))
        if sweep:
            out["sweep"] = {str(n): _sweep_one(settings, n, counts, workdir, progress)
                            for n in sweep}
        finished = True
    finally:
        progress.clear()
        if finished or not any(workdir.iterdir()):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"droplet bench: cluster logs kept in {workdir}", file=sys.stderr)
    _ratios(out)
    out["counts"] = counts
    if notes:
        out["notes"] = notes
    print("\n".join(_table(out)))
    if args.plot:
        from droplet.cli.bench_plot import plot_bench

        plot_bench(out, samples, args.plot)
        print(f"figures drawn in {args.plot}", file=sys.stderr)
    print(json.dumps(_rounded(out), sort_keys=True), flush=True)
    return 0
