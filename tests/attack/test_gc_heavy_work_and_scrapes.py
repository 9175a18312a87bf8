"""A worker whose heap was settled (heap.settle) running functions that make many cycles,
functions that drive the collector themselves, and /metrics scraped all the while: results
right, the GC metrics monotonic and sane, nothing in the workers' logs."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.cli.etcd_local import free_port
from tests.conftest import Services, purge_namespace, start_cluster
from tests.e2e.test_operations import _status

pytestmark = pytest.mark.e2e

_GC_LINE = re.compile(r'^droplet_gc_(collections_total|pause_seconds_total|longest_pause_seconds)'
                      r'\{generation="(\d)"\} (\S+)$')


def _churn(lib: Any, n: int) -> int:
    nodes: list[dict[str, Any]] = [{"i": i} for i in range(n)]
    for i, node in enumerate(nodes):
        node["next"] = nodes[(i + 1) % n]  # one big cycle
    kept = [[k] for k in range(n // 10)]
    for k in kept:
        k.append(k)  # many small ones
    return sum(node["next"]["i"] for node in nodes) + len(kept)


def _drive(lib: Any, how: str) -> int:
    import gc

    if how == "collect":
        gc.collect()
    elif how == "freeze":
        gc.freeze()
    elif how == "unfreeze":
        gc.unfreeze()
    return gc.get_freeze_count()


def _scrape(port: int) -> dict[tuple[str, str], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = {}
    for line in body.splitlines():
        m = _GC_LINE.match(line)
        if m:
            found[(m.group(1), m.group(2))] = float(m.group(3))
    return found


def test_cycles_and_scrapes_under_a_settled_heap(
    services: Services, tmp_path: Path, unique: str
) -> None:
    settings = services.settings(metrics_port=free_port(), status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path, workers=2)
    problems: list[str] = []
    stop = threading.Event()
    scrapes = [0]
    began = time.monotonic()
    try:
        with droplet.connect(settings=settings) as c:
            c.register(_churn, unique)
            c.register(_drive, unique + "-gc")
            time.sleep(1.0)
            ports = [w["metrics_port"] for w in _status(settings)["workers"]]
            assert len(ports) == 2

            def scraper() -> None:
                last: dict[int, dict[tuple[str, str], float]] = {p: {} for p in ports}
                while not stop.is_set():
                    for p in ports:
                        try:
                            now = _scrape(p)
                        except Exception as exc:
                            problems.append(f"scrape {p}: {exc!r}")
                            continue
                        scrapes[0] += 1
                        if len(now) != 9:
                            problems.append(f"{p}: {len(now)} gc series")
                        for key, value in now.items():
                            if key[0] != "longest_pause_seconds" and value < last[p].get(key, 0):
                                problems.append(f"{p}: {key} fell {last[p][key]} -> {value}")
                            if key[0] != "collections_total" and (
                                    value > time.monotonic() - began + 60):
                                problems.append(f"{p}: {key} = {value} s")
                        last[p] = now

            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
            n = 50_000
            want = sum(range(n)) + n // 10
            for _ in range(3):
                futures = [c.call(unique, n) for _ in range(12)]
                futures += [c.call(unique + "-gc", how)
                            for how in ("collect", "freeze", "unfreeze", "collect")]
                results = [f.get(timeout=60) for f in futures]
                assert results[:12] == [want] * 12
            stop.set()
            thread.join(10)
        assert scrapes[0] > 0
        assert not problems, problems[:10]
    finally:
        stop.set()
        cluster.stop()
        purge_namespace(settings, cluster.worker_ids())
    for log in sorted(tmp_path.glob("worker-*.log")):
        text = log.read_text(errors="replace")
        assert "Exception ignored" not in text and "Traceback" not in text, (log, text[-3000:])
