"""`droplet bench --quick` end to end: it starts its own cluster, measures, and reports JSON."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Services
from tests.processes import exited

pytestmark = pytest.mark.e2e


def test_bench_quick_reports_positive_figures(services: Services) -> None:
    command = [
        sys.executable, "-m", "droplet.cli.main",
        "--broker-url", services.broker_url, "--etcd", services.etcd_endpoint,
        "bench", "--quick", "--workers", "2", "--breakdown", "--sweep", "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("call_p50_ms", "call_p99_ms", "direct_call_p50_ms", "direct_call_p99_ms",
                "dag2_p50_ms", "dag2_p99_ms", "burst_calls_per_s", "map_calls_per_s"):
        value = report[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        assert value > 0, key
    assert report["cluster"]["workers"] == 2
    assert report["cluster"]["external"] is False
    assert report["cluster"]["namespace"].startswith("bench-")
    stages = report["breakdown"]
    assert set(stages) == {"client.send -> worker.start", "worker.start -> worker.end",
                           "worker.end -> stored", "stored -> client.received"}
    assert all(s["p50_ms"] >= 0 and s["p99_ms"] >= s["p50_ms"] for s in stages.values())
    assert report["sweep"]["1"] > 0
    assert report["sweep_runs"]["1"] == [report["sweep"]["1"]]  # --quick: one round
    speed = report["machine_speed"]
    assert set(speed["samples"]) == {"droplet", "sweep"}  # (no floor, no peers here)
    assert speed["samples"]["droplet"] > 0  # the sampler ran while the cluster was measured
    assert all(ms > 0 for ms in speed["probe_cpu_ms"].values())
    assert speed["drift"] >= 1.0
    cpu = report["sweep_cpu"]["1"]
    # The one worker ran the burst: it spent CPU on it, and less than a core at rest.
    assert cpu["worker_cpu_us_per_call"] > 0
    assert 0 <= cpu["idle_worker_cpu_pct"] < 100
    dag_stages = set(report["dag2_breakdown"])
    # The client sends the first trigger straight to incr's worker (client/dagroutes.py).
    assert dag_stages == {"client.send -> incr.start",
                          "incr.start -> incr.end", "incr.end -> square.start",
                          "square.start -> square.end", "square.end -> client.received"}


def _descendants(pid: int) -> set[int]:
    """The processes below pid (read from /proc: children of children too)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _cluster_of(pid: int) -> set[int]:
    return {p for p in _descendants(pid)
            if b"droplet.cli.main" in Path(f"/proc/{p}/cmdline").read_bytes()}


def test_a_bench_sent_sigterm_stops_its_cluster_first(services: Services) -> None:
    """A CI job's time limit or a `kill` must not leave a bench's scheduler and workers (and a
    private etcd, when it started one) running: SIGTERM goes through the same clean-up as
    Ctrl-C."""
    command = [
        sys.executable, "-m", "droplet.cli.main",
        "--broker-url", services.broker_url, "--etcd", services.etcd_endpoint,
        "bench", "--quick", "--workers", "2", "--calls", "5000",
    ]
    bench = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(started) < 3 and time.monotonic() < deadline and bench.poll() is None:
            with contextlib.suppress(OSError):
                started = _cluster_of(bench.pid)
            time.sleep(0.1)
        assert len(started) >= 3, "the bench's scheduler and two workers never started"
        time.sleep(1.0)  # (the cluster at work: the bench is measuring)
        below = _descendants(bench.pid)
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=60)
        assert bench.returncode == 130, err[-2000:]
        deadline = time.monotonic() + 15
        while not all(exited(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in below if not exited(p)], "processes of the bench outlived it"
        kept = re.search(r"cluster logs kept in (\S+)", err)
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)
    finally:
        for pid in started | ({bench.pid} if bench.poll() is None else set()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_bench_rounds_measure_one_cluster_again_and_report_medians(
        services: Services, tmp_path: Path) -> None:
    """`--rounds 2` on a real cluster: its functions and DAG are registered again in the second
    round (the first round's are deleted, their pins freed), and each figure is the median of
    the two rounds'."""
    (tmp_path / "pika_floor.py").write_text(
        'import json\nprint(json.dumps({"hops2_p50_ms": 0.5, "hops3_p50_ms": 0.8,'
        ' "hops3_burst_msgs_per_s": 2000.0}))\n')
    command = [
        sys.executable, "-m", "droplet.cli.main",
        "--broker-url", services.broker_url, "--etcd", services.etcd_endpoint,
        "bench", "--quick", "--workers", "2", "--rounds", "2", "--peers", str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    rounds = report["round_figures"]
    assert len(rounds) == 2 and report["counts"]["rounds"] == 2
    for key in ("call_p50_ms", "direct_call_p99_ms", "dag2_p50_ms", "burst_calls_per_s"):
        values = [r[key] for r in rounds]
        assert all(v > 0 for v in values), key
        assert report[key] == pytest.approx(sum(values) / 2, abs=2e-3), key
    assert report["floor"]["hops3_p50_ms"] == 0.8
    assert report["call_p50_vs_floor3"] == pytest.approx(report["call_p50_ms"] / 0.8, rel=1e-2)
    assert "DAG figures skipped" not in " ".join(report.get("notes", []))
    assert set(report["machine_speed"]["samples"]) == {"floor", "droplet"}
