"""Soak: calls at full rate for DROPLET_SOAK_S seconds (60 in `make test`; the long form is
`DROPLET_SOAK_S=600 pytest -s -m soak tests/soak`). Outcomes the caller has received live only
`result_window_s`, so the number of keys in etcd and etcd's database reach a plateau instead of
growing with every call, and call latency does not degrade as the run goes on.

It prints a table of samples and the figures of the README's capacity model: live keys per
call/s of rate (the window), and bytes of etcd's database in use per live key.
"""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.etcd_local import LocalEtcd
from droplet.runtime import open_kv
from tests.conftest import Services, purge_namespace, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

DURATION_S = float(os.environ.get("DROPLET_SOAK_S", "60"))
WINDOW_S = 8
SAMPLE_S = 2.0


def _db_in_use(endpoint: str) -> int:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"^etcd_mvcc_db_total_size_in_use_in_bytes (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


@pytest.mark.timeout(int(DURATION_S) + 180)
def test_keys_and_database_plateau_and_latency_holds_at_full_rate(
    services: Services, tmp_path: Path
) -> None:
    etcd = LocalEtcd(tmp_path / "etcd", compaction_retention="10s").start()
    settings = services.settings(result_window_s=WINDOW_S, worker_lease_ttl_s=5).with_(
        etcd_endpoints=(etcd.endpoint,))
    cluster = start_cluster(settings, tmp_path, workers=2)
    samples: list[tuple[float, int, int, int]] = []  # (t, calls done, keys, db bytes)
    latencies: list[tuple[float, float]] = []
    done = [0]
    stop = threading.Event()

    def sample() -> None:
        kv = open_kv(settings)
        try:
            while not stop.wait(SAMPLE_S):
                keys = kv.count_prefix(settings.etcd_prefix)
                samples.append((time.monotonic(), done[0], keys, _db_in_use(etcd.endpoint)))
        finally:
            kv.close()

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        with droplet.connect(settings=settings) as c:
            incr = c.register(lambda lib, x: x + 1, "soak-incr")
            started = time.monotonic()
            sampler.start()
            while (now := time.monotonic()) - started < DURATION_S:
                batch = list(c.map(incr, range(500)))
                assert batch == list(range(1, 501))
                done[0] += len(batch)
                t0 = time.perf_counter()
                assert incr(1).get(timeout=30) == 2
                latencies.append((now - started, time.perf_counter() - t0))
                done[0] += 1
        stop.set()
        sampler.join(timeout=10)
    finally:
        stop.set()
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
        etcd.stop()

    _report(samples, latencies, done[0])
    third = len(samples) // 3
    assert third >= 3, "the run was long enough to judge"
    middle, last = samples[third: 2 * third], samples[2 * third:]
    assert max(s[2] for s in last) <= 1.5 * max(s[2] for s in middle) + 2000, (
        "the number of keys keeps growing"
    )
    assert max(s[3] for s in last) <= 1.5 * max(s[3] for s in middle) + 4 * 2**20, (
        "etcd's database keeps growing"
    )
    early = [lat for t, lat in latencies if t < DURATION_S / 3]
    late = [lat for t, lat in latencies if t >= 2 * DURATION_S / 3]
    assert statistics.median(late) <= 2 * statistics.median(early) + 0.005, (
        "call latency degraded over the run"
    )


def _report(samples: list[tuple[float, int, int, int]], latencies: list[tuple[float, float]],
            calls: int) -> None:
    start = samples[0][0] if samples else 0.0
    print(f"\nsoak: {calls} calls in {DURATION_S:g}s, result_window_s={WINDOW_S}")
    print(f"{'t (s)':>7} {'calls':>8} {'calls/s':>8} {'keys':>8} {'db in use':>12}")
    previous: Any = None
    rates = []
    for t, done, keys, db in samples:
        rate = (done - previous[1]) / (t - previous[0]) if previous else 0.0
        if previous:
            rates.append(rate)
        print(f"{t - start:7.1f} {done:8d} {rate:8.0f} {keys:8d} {db / 2**20:10.1f} MiB")
        previous = (t, done)
    if samples and rates:
        plateau = samples[len(samples) // 2:]
        keys = statistics.median(s[2] for s in plateau)
        db = statistics.median(s[3] for s in plateau)
        rate = statistics.median(rates[len(rates) // 2:])
        print(f"plateau: {keys:.0f} keys at {rate:.0f} calls/s -> {keys / max(rate, 1):.1f} s "
              f"of calls kept (window {WINDOW_S} s); {db / max(keys, 1):.0f} bytes of etcd's "
              "database in use per live key")
    early = [lat for t, lat in latencies if t < DURATION_S / 3]
    late = [lat for t, lat in latencies if t >= 2 * DURATION_S / 3]
    if early and late:
        print(f"single-call latency p50: first third {1000 * statistics.median(early):.2f} ms, "
              f"last third {1000 * statistics.median(late):.2f} ms")
