"""`droplet bench --quick` end to end: it starts its own cluster, measures, and reports JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Services

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
