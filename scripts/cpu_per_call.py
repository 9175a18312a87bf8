"""Where a single call's CPU goes, process by process: `python scripts/cpu_per_call.py
[durable|direct|dag] [SECONDS]` starts a one-worker cluster (a private etcd, the broker on
127.0.0.1), runs sequential calls for SECONDS and prints their p50 and the CPU each process
spent per call (user+system, from /proc): this client, the worker (and its busiest threads
with their wake-ups per call), the scheduler, RabbitMQ (every beam.smp on the host) and etcd.

Latencies move with the machine's load; CPU per call much less. It is how the publisher
confirms of plain requests were found (RabbitMQ's half of a durable call was system time):
run it against two trees (`cd TREE && PYTHONPATH=TREE python scripts/cpu_per_call.py`, the
cluster's processes import from the working directory) and compare."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import droplet
from droplet.cli.cluster import LocalCluster, purge_namespace
from droplet.cli.etcd_local import LocalEtcd
from droplet.settings import Settings

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) * _TICK_S, int(fields[12]) * _TICK_S


def threads(pid: int) -> dict[str, tuple[str, float, int]]:
    """Thread id -> (name, CPU seconds, voluntary context switches)."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # ended meanwhile
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        found[tid] = (name, (int(fields[11]) + int(fields[12])) * _TICK_S, switches)
    return found


def pids_of(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def caller(client: Any, mode: str) -> Callable[[int], Any]:
    if mode == "durable":
        return lambda i: client.call("cpu_incr", i).get(timeout=10)
    if mode == "direct":
        return lambda i: client.call_direct("cpu_incr", i).get(timeout=10)
    return lambda i: client.call_dag("cpu_dag", {"cpu_incr": [i]}, direct_response=True,
                                     timeout=10)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "durable"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    if mode not in ("durable", "direct", "dag"):
        sys.exit(f"mode {mode!r}: durable, direct or dag")
    workdir = Path(tempfile.mkdtemp(prefix="cpu-per-call-"))
    etcd = LocalEtcd(workdir / "etcd").start()
    settings = Settings.from_env().with_(namespace=f"cpu-{uuid.uuid4().hex[:8]}",
                                         etcd_endpoints=(etcd.endpoint,))
    cluster = LocalCluster(settings, workdir).start(2 if mode == "dag" else 1)
    try:
        cluster.wait_ready(2 if mode == "dag" else 1, 60)
        with droplet.connect(settings=settings) as client:
            client.register(lambda lib, x: x + 1, "cpu_incr")
            if mode == "dag":
                client.register(lambda lib, x: x * x, "cpu_square")
                client.register_dag("cpu_dag", ["cpu_incr", "cpu_square"],
                                    [("cpu_incr", "cpu_square")])
            call = caller(client, mode)
            for _ in range(100):  # until the client's view has the DAG (or the function)
                try:
                    call(0)
                    break
                except droplet.DropletError:
                    time.sleep(0.1)
            warm_until = time.monotonic() + 1.5 * settings.status_interval_s + 1
            i = 0
            while time.monotonic() < warm_until:  # what workers learn reaches the client
                call(i)
                i += 1
            procs = {"client": [os.getpid()], "worker": [p.pid for p in cluster.workers],
                     "scheduler": [p.pid for p in cluster.schedulers],
                     "rabbitmq": pids_of("beam.smp"), "etcd": [etcd.pid or 0]}
            before = {k: [cpu_s(p) for p in v] for k, v in procs.items()}
            worker = cluster.workers[0].pid
            threads_before = threads(worker)
            took: list[float] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                start = time.perf_counter()
                call(i)
                took.append(time.perf_counter() - start)
                i += 1
            after = {k: [cpu_s(p) for p in v] for k, v in procs.items()}
            threads_after = threads(worker)
        n = len(took)
        print(f"{mode}: {n} calls, p50 {statistics.median(took) * 1e3:.3f} ms")
        for name in procs:
            user = sum(a[0] - b[0] for a, b in zip(after[name], before[name], strict=True))
            system = sum(a[1] - b[1] for a, b in zip(after[name], before[name], strict=True))
            print(f"  {name:10s} {user / n * 1e6:6.0f} + {system / n * 1e6:5.0f} µs a call "
                  "(user + system)")
        for tid, (label, used, switches) in threads_after.items():
            if tid in threads_before:
                _, used0, switches0 = threads_before[tid]
                if used - used0 > 0.01 or switches - switches0 > n // 10:
                    print(f"  worker thread {tid} ({label}): {(used - used0) / n * 1e6:.0f} µs "
                          f"and {(switches - switches0) / n:.2f} wake-ups a call")
    finally:
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
        etcd.stop()


if __name__ == "__main__":
    main()
