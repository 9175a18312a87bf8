"""`droplet bench` takes its p99 at the rank the peers' scripts take theirs (celery_bench.py,
dramatiq_bench.py: the sorted samples at index int(0.99 n)), so the ratios it prints compare
the same sample on both sides."""

from __future__ import annotations

import random

from droplet.cli.bench_measure import percentiles


def _peers_p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_the_p99_is_the_sample_the_peers_take() -> None:
    rng = random.Random(7)
    for n in (1, 2, 99, 100, 101, 300, 1000):
        samples = [rng.random() for _ in range(n)]
        assert percentiles(samples)[1] == _peers_p99(samples), n
    calls = [float(i) for i in range(300)]  # 0..299 ms
    rng.shuffle(calls)
    assert percentiles(calls) == (149.5, 297.0)  # the third slowest of 300
