"""heap.GcPauses with collections started from many threads at once (allocations and explicit
gc.collect()) while another thread scrapes the registry: no exception out of the callback
(unraisable warnings are errors here), counts that only grow, and pauses that add up to no
more than the time that passed (collections never overlap: CPython runs one at a time)."""

from __future__ import annotations

import gc
import itertools
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from droplet import heap


def test_collections_from_many_threads_while_scraped() -> None:
    pauses = heap.GcPauses()
    registry = CollectorRegistry()
    registry.register(pauses)
    stop = threading.Event()
    problems: list[str] = []
    scrapes = [0]

    def churn(explicit: bool, first: int) -> None:
        # Explicit collections go through every generation in turn: a full one resets the
        # younger generations' counts, and a loaded CI run whose explicit collections were all
        # full (the generation was once len(ring) % 3, always 2) saw no generation-1 one.
        for turn in itertools.count(first):  # (each thread starts at another generation)
            if stop.is_set():
                return
            ring: list[object] = []
            for _ in range(2000):
                node: list[object] = [ring]
                ring.append(node)
            if explicit:
                gc.collect(turn % 3)

    def scrape() -> None:
        last = [0, 0, 0]
        while not stop.is_set():
            text = generate_latest(registry).decode()
            scrapes[0] += 1
            now = [float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("droplet_gc_collections_total{")]
            if len(now) != 3 or any(n < b for n, b in zip(now, last, strict=True)):
                problems.append(f"{last} -> {now}")
            last = [int(n) for n in now] if len(now) == 3 else last

    threads = [threading.Thread(target=churn, args=(i % 2 == 0, i // 2)) for i in range(8)]
    threads.append(threading.Thread(target=scrape))
    began = time.perf_counter()
    pauses.start()
    try:
        for t in threads:
            t.start()
        time.sleep(3.0)
        # Until every generation has been collected at least once (a loaded CI host gave the
        # threads so little time in 3 s that no full collection came: [28, 3, 0]).
        deadline = time.monotonic() + 60
        while min(pauses.collections) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        pauses.stop()
    lived = time.perf_counter() - began
    assert not any(t.is_alive() for t in threads)
    assert not problems, problems[:5]
    assert scrapes[0] > 0 and min(pauses.collections) > 0, (scrapes, pauses.collections)
    assert sum(pauses.paused_s) <= lived, (pauses.paused_s, lived)
    assert all(0 < pauses.longest_s[g] <= pauses.paused_s[g] for g in heap.GENERATIONS)
