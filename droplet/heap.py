"""The garbage collector in a long-running worker or scheduler: its start-up objects set
aside, and its pauses counted.

A full collection walks every object a process holds, and a worker holds a few hundred
thousand once its imports are done (protobuf descriptors, prometheus, its own modules). It
runs every few tens of thousands of calls, holding the GIL throughout, so whichever call was
in hand waited for all of it. Those objects live as long as the process: once the service
is built they are moved out of the collector's sight (`gc.freeze`), and later full
collections walk only what came after. Figures in the README (Performance, "GC pauses").

Pauses are counted per generation from `gc.callbacks` into plain numbers. The callback runs
inside whatever allocation started the collection, possibly under a lock a metric holds, so
it takes none; the metrics read the numbers when scraped. A pause is wall time: it includes
any time a finalizer run by the collection let other threads in, and a collection already
under way when the callback went in is not counted.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

GENERATIONS = (0, 1, 2)


def settle() -> int:
    """Collects what start-up left as garbage, then freezes every object still alive; the
    number frozen. For a process's own entry point only: a library caller's heap is not
    ours to freeze."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses(Collector):
    """Collections and the time they held the process, per generation, since start()."""

    def __init__(self) -> None:
        self.collections = [0] * len(GENERATIONS)
        self.paused_s = [0.0] * len(GENERATIONS)
        self.longest_s = [0.0] * len(GENERATIONS)
        self._began = 0.0
        self._lock = threading.Lock()  # start/stop only, never from the callback

    def start(self) -> GcPauses:
        with self._lock:
            if self._observe not in gc.callbacks:
                gc.callbacks.append(self._observe)
        return self

    def stop(self) -> None:
        with self._lock:
            if self._observe in gc.callbacks:
                gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        began, self._began = self._began, 0.0
        if not began:
            # Its start came before start() (or before a stop() and start() again): the
            # callback went in while another thread's collection was in its finalizers.
            return
        generation = info["generation"]
        took = time.perf_counter() - began
        self.collections[generation] += 1
        self.paused_s[generation] += took
        if took > self.longest_s[generation]:
            self.longest_s[generation] = took

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        runs = CounterMetricFamily("droplet_gc_collections", "Garbage collections, by "
                                   "generation", labels=["generation"])
        paused = CounterMetricFamily("droplet_gc_pause_seconds", "Time garbage collections "
                                     "held the process, by generation", labels=["generation"])
        longest = GaugeMetricFamily("droplet_gc_longest_pause_seconds", "The longest garbage "
                                    "collection so far, by generation", labels=["generation"])
        for g in GENERATIONS:
            runs.add_metric([str(g)], self.collections[g])
            paused.add_metric([str(g)], self.paused_s[g])
            longest.add_metric([str(g)], self.longest_s[g])
        yield runs
        yield paused
        yield longest
        yield GaugeMetricFamily("droplet_gc_frozen_objects", "Start-up objects set aside from "
                                "garbage collection", value=gc.get_freeze_count())
