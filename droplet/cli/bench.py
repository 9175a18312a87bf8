"""`droplet bench`: latency and throughput of calls and DAGs, end to end through the broker.

By default the figures come from a throw-away cluster in a fresh namespace, so a bench never
loads, pins or litters a cluster someone is using; `--external` measures the configured one.
Absolute figures say little on their own, so `--floor` also runs a raw-pika script and reports
how far above that floor (the same number of broker hops, no Droplet) each figure is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import droplet
from droplet.cli.bench_cpu import FleetCpu, measure_fleet_cpu, settle
from droplet.cli.bench_measure import (
    CALL_TIMEOUT_S,
    BenchError,
    Progress,
    burst,
    measure,
    register_incr,
    warm_up,
)
from droplet.cli.bench_rounds import (
    alternating,
    check_rounds,
    is_number,
    kept_on_failure,
    medians,
    ratio,
)
from droplet.cli.bench_scripts import find_scripts, run_phase
from droplet.cli.bench_speed import SpeedLog
from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.cli.etcd_local import LocalEtcd, etcd_answers
from droplet.errors import DropletError
from droplet.settings import Settings

FULL = {"calls": 300, "dag_calls": 300, "burst": 2000, "map": 5000, "warmup": 50}
QUICK = {"calls": 20, "dag_calls": 20, "burst": 100, "map": 200, "warmup": 5}
# Fewer samples than this make p99 the maximum of a handful: noise, not a tail.
MIN_LATENCY_SAMPLES = 300
READY_TIMEOUT_S = 60.0
SWEEP_BURSTS = 3  # per fleet size of --sweep and round: its rate is their median
SWEEP_ROUNDS = 4  # rounds of --sweep (1 with --quick): a size's rate is their median


def sweep_order(sizes: list[int], rounds: int) -> Iterator[int]:
    """The fleet sizes in the order `--sweep` starts them (2,32 then 32,2: see bench_rounds):
    on a shared VM whose load drifts over a minute by more than the effect measured, the size
    started last would otherwise always take the busier end."""
    return (size for _, size in alternating(sizes, rounds))


@contextmanager
def local_cluster(base: Settings, workers: int, workdir: Path,
                  notes: list[str] | None = None) -> Iterator[LocalCluster]:
    """One scheduler and `workers` workers in a fresh namespace; everything they created (keys,
    queues, a private etcd) is gone afterwards. What the figures depend on goes to `notes`
    (a private etcd that answers writes before they are on disk)."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    etcd: LocalEtcd | None = None
    endpoint = base.etcd_endpoints[0]
    if not etcd_answers(endpoint):
        etcd = LocalEtcd(workdir / f"etcd-{namespace}", log_path=workdir / f"{namespace}-etcd.log")
        endpoint = etcd.start().endpoint
        if etcd.binary is not None and etcd.alone_warning() is not None and notes is not None:
            notes.append(f"the private etcd {etcd.binary.version_text or '?'} answers a write "
                         "before its fsync (etcd-io/etcd#14370): a fixed one adds the fsync to "
                         "each durable call")
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
        yield cluster
    finally:
        cluster.stop()
        try:
            purge_namespace(settings, cluster.worker_ids())
        except DropletError as exc:  # must not hide the error that ended the bench
            print(f"droplet bench: clean-up of {namespace} failed: {exc}", file=sys.stderr)
        if etcd is not None:
            etcd.stop()


def _sweep(base: Settings, order: Iterable[int], counts: dict[str, int], workdir: Path,
           progress: Progress) -> dict[str, Any]:
    """Each fleet size's rate and CPU figures: the medians over its rounds (the rates of
    every round are kept too, under `sweep_runs`)."""
    runs: dict[str, list[tuple[float, FleetCpu | None]]] = {}
    for workers in order:
        runs.setdefault(str(workers), []).append(
            _sweep_one(base, workers, counts, workdir, progress))
    cpu = {n: [c for _, c in done if c is not None] for n, done in runs.items()}
    return {"sweep": {n: statistics.median(rate for rate, _ in done)
                      for n, done in runs.items()},
            "sweep_runs": {n: [rate for rate, _ in done] for n, done in runs.items()},
            "sweep_cpu": {n: FleetCpu.median_of(c).as_dict() for n, c in cpu.items() if c}}


def _sweep_one(base: Settings, workers: int, counts: dict[str, int], workdir: Path,
               progress: Progress) -> tuple[float, FleetCpu | None]:
    with local_cluster(base, workers, workdir) as cluster, droplet.connect(
        settings=cluster.settings
    ) as client:
        incr = register_incr(client, uuid.uuid4().hex[:8])
        warm_up(client, counts["warmup"],
                lambda i: client.call(incr, i).get(timeout=CALL_TIMEOUT_S),
                lambda i: i + 1, f"warm-up {workers} workers", progress)
        pids = [p.pid for p in cluster.workers]
        settle(pids)

        def bursts() -> float:  # one burst of a few tenths of a second is at the mercy of
            # whatever else the machine does then: the median of a few
            return statistics.median(burst(client, incr, counts["burst"], progress)
                                     for _ in range(SWEEP_BURSTS))

        return measure_fleet_cpu(pids, [p.pid for p in cluster.schedulers],
                                 counts["burst"] * SWEEP_BURSTS, bursts)


def _ratios(out: dict[str, Any]) -> None:
    floor = out.get("floor", {})
    pairs = [("call_p50_vs_floor3", "call_p50_ms", "hops3_p50_ms"),
             ("direct_call_p50_vs_floor2", "direct_call_p50_ms", "hops2_p50_ms"),
             ("dag2_p50_vs_floor3", "dag2_p50_ms", "hops3_p50_ms"),
             ("burst_vs_floor3", "burst_calls_per_s", "hops3_burst_msgs_per_s"),
             ("map_vs_floor3", "map_calls_per_s", "hops3_burst_msgs_per_s")]
    for key, ours, theirs in pairs:
        if (quotient := ratio(out.get(ours), floor.get(theirs))) is not None:
            out[key] = quotient
    for peer, figures in out.get("peers", {}).items():
        compared = [(f, f) for f in ("call_p50_ms", "call_p99_ms", "dag2_p50_ms",
                                     "dag2_p99_ms", "burst_calls_per_s")]
        compared += [("direct_call_p50_ms", "call_p50_ms"),
                     ("direct_call_p99_ms", "call_p99_ms"),
                     ("map_calls_per_s", "burst_calls_per_s")]
        for ours, theirs in compared:
            if (quotient := ratio(out.get(ours), figures.get(theirs))) is not None:
                out[f"{ours}_vs_{peer}"] = quotient


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
             if is_number(v)]
    rows += [(f"{peer} {k}", v, unit(k)) for peer, figures in out.get("peers", {}).items()
             for k, v in figures.items() if is_number(v)]
    rows += [(f"stage {stage}", v["p50_ms"], "ms p50") for stage, v
             in out.get("breakdown", {}).items()]
    rows += [(f"dag2 {stage}", v["p50_ms"], "ms p50") for stage, v
             in out.get("dag2_breakdown", {}).items()]
    rows += [(f"sweep {n} workers", v, "calls/s") for n, v in out.get("sweep", {}).items()]
    rows += [(f"sweep {n} workers {k}", v, "us" if k.endswith("_us_per_call") else "%")
             for n, cpu in out.get("sweep_cpu", {}).items() for k, v in cpu.items()]
    rows += [(f"machine probe during {phase}", v, "ms CPU") for phase, v
             in out.get("machine_speed", {}).get("probe_cpu_ms", {}).items()]
    lines += [f"  {name:<46}{value:>12.3f} {unit}" for name, value, unit in rows]
    return lines + [f"  note: {note}" for note in out.get("notes", [])]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _sweep_plan(args: argparse.Namespace) -> Iterator[int] | None:
    """The fleet sizes `--sweep` starts, in order, every round (None without `--sweep`).
    Refused before the bench runs for minutes: a `--sweep` of no size or `--sweep-rounds`
    alone (neither would be measured),
    a size named twice (its rounds would not alternate with the others'), and an odd number
    of rounds over 1 (a steady drift decides each size's median by its middle round alone,
    which starts the sizes in one order: the bias of a single round, reversed)."""
    if args.sweep is None:
        if args.sweep_rounds is not None:
            raise BenchError("--sweep-rounds repeats the fleet sizes of --sweep: give --sweep")
        return None
    try:
        sweep = [int(n) for n in args.sweep.split(",") if n.strip()]
    except ValueError:
        sweep = []
    if not sweep:
        raise BenchError(f"--sweep takes worker counts like 1,2,4, not {args.sweep!r}")
    if twice := sorted({n for n in sweep if sweep.count(n) > 1}):
        raise BenchError(f"--sweep names {','.join(map(str, twice))} twice: "
                         "--sweep-rounds starts each size again")
    if any(n < 1 for n in sweep):
        raise BenchError("worker counts must be at least 1")
    if args.external:
        raise BenchError("--sweep starts its own clusters: it cannot be used with --external")
    rounds = args.sweep_rounds if args.sweep_rounds is not None else (
        1 if args.quick else SWEEP_ROUNDS)
    check_rounds("--sweep-rounds", rounds)
    return sweep_order(sweep, rounds)


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    with _terminated_as_interrupted():
        return _run(settings, args)


@contextmanager
def _terminated_as_interrupted() -> Iterator[None]:
    """A SIGTERM (a CI job's time limit, `kill`) ends the bench the way Ctrl-C does: through
    its clean-up, which stops the cluster and the private etcd it started. Its default action
    killed the bench on the spot and left them running, the workers busy for ever. Only the
    first one counts: a second would cut that clean-up short (SIGKILL still ends it all)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # (signal handlers can only be set from the main thread)
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    counts = _counts(args)
    if args.workers < 1:
        raise BenchError("worker counts must be at least 1")
    order = _sweep_plan(args)
    rounds = 1 if args.rounds is None else args.rounds
    check_rounds("--rounds", rounds)
    progress = Progress(args.progress or sys.stderr.isatty())
    if args.plot:
        from droplet.cli.bench_plot import check_plot_path

        check_plot_path(args.plot)
    notes: list[str] = []
    scripts = find_scripts(args, notes)
    runs: list[dict[str, Any]] = []  # each round's figures, as measured
    samples: dict[str, list[float]] = {}
    speed = SpeedLog()
    workdir = Path(tempfile.mkdtemp(prefix="droplet-bench-"))
    finished = False
    try:
        speed.start()
        with ExitStack() as stack:
            stack.enter_context(kept_on_failure(runs))  # (told last: after the clean-up)
            client: droplet.DropletClient | None = None
            # The floor and the peers first, while no cluster of ours loads the machine; the
            # cluster then stays up (idle through later rounds' other phases) until the end.
            for round_index, phase in alternating([*scripts, "droplet"], rounds):
                if round_index == len(runs):
                    runs.append({})
                speed.mark(phase)
                if phase != "droplet":
                    progress.show(phase, 0, 1)
                    figures = run_phase(
                        phase, scripts[phase], settings.broker_url, args.peers_python, notes,
                        counts, required=phase == "floor" and args.floor is not None)
                    if figures is not None and phase == "floor":
                        runs[round_index]["floor"] = figures
                    elif figures is not None:
                        runs[round_index].setdefault("peers", {})[phase] = figures
                    continue
                if client is None:
                    used = settings if args.external else stack.enter_context(
                        local_cluster(settings, args.workers, workdir, notes)).settings
                    client = stack.enter_context(droplet.connect(settings=used))
                    runs[round_index]["cluster"] = {
                        "workers": len(client.metadata.workers()),
                        "schedulers": len(client.metadata.schedulers()),
                        "external": bool(args.external), "namespace": used.namespace}
                kept: dict[str, list[float]] = {}
                runs[round_index].update(measure(  # stages traced once: they are not compared
                    client, counts, progress, notes, samples=kept,
                    traced=args.breakdown and round_index == 0))
                for name, latencies_ms in kept.items():
                    samples.setdefault(name, []).extend(latencies_ms)
        out = medians(runs)
        if rounds > 1:
            out["round_figures"] = runs
        if order is not None:
            speed.mark("sweep")
            out.update(_sweep(settings, order, counts, workdir, progress))
        finished = True
    finally:
        speed.stop()
        progress.clear()
        if finished or not any(workdir.iterdir()):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"droplet bench: cluster logs kept in {workdir}", file=sys.stderr)
    notes = list(dict.fromkeys(notes))  # a round's notes again, from every later round
    _ratios(out)
    out["counts"] = {**counts, "rounds": rounds}
    out["machine_speed"] = speed.report()
    if (moved := speed.note()) is not None:
        notes.append(moved)
    if notes:
        out["notes"] = notes
    print("\n".join(_table(out)))
    if args.plot:
        from droplet.cli.bench_plot import plot_bench

        plot_bench(out, samples, args.plot)
        print(f"figures drawn in {args.plot}", file=sys.stderr)
    print(json.dumps(_rounded(out), sort_keys=True), flush=True)
    return 0
