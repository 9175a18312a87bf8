"""How fast this machine runs a fixed piece of Python, at each phase of `droplet bench`.

The floor, the peers and Droplet are measured one after another, and on a shared VM the CPU a
process gets can halve within seconds: on the development VM the loop below took 2.6 ms, and
5.7 ms fifteen seconds later, and a worker's CPU per durable call doubled with it. A ratio
between two phases then says as much about the host as about either system. So the bench
times this loop as each phase starts and at the end, reports the times, and says so in its
notes when they moved by more than `DRIFT_NOTED`: such a run's ratios are to be read with that
uncertainty, or the run repeated.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

PROBE_ITERATIONS = 20_000  # about 2.5 ms on the development VM at its usual speed
PROBE_REPEATS = 7  # the median of these: a single preemption does not move it
DRIFT_NOTED = 1.25  # slowest probe / fastest probe of a run worth a note


def probe_ms(iterations: int = PROBE_ITERATIONS, repeats: int = PROBE_REPEATS) -> float:
    """The median time, in ms, of a loop of dict and integer work (the interpreter's bread
    and butter, as in every process a call crosses)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        table: dict[int, int] = {}
        total = 0
        for i in range(iterations):
            table[i & 255] = i
            total += table.get(i & 127, 0)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def when(phase: str) -> str:
    """When a probe ran, in words ("end" is no phase that starts)."""
    return "at the end" if phase == "end" else f"as {phase} started"


class SpeedLog:
    """The probe's time as each phase of one bench run starts ("end" once all are done)."""

    def __init__(self, probe: Callable[[], float] = probe_ms) -> None:
        self._probe = probe
        self.probes_ms: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        self.probes_ms[phase] = self._probe()

    def drift(self) -> float:
        """Slowest probe over fastest (1.0 with fewer than two)."""
        times = list(self.probes_ms.values())
        return max(times) / min(times) if len(times) > 1 and min(times) > 0 else 1.0

    def note(self) -> str | None:
        drift = self.drift()
        if drift <= DRIFT_NOTED:
            return None
        slowest = max(self.probes_ms, key=self.probes_ms.__getitem__)
        fastest = min(self.probes_ms, key=self.probes_ms.__getitem__)
        # in the order they ran: a machine that sped up must not read as one that slowed
        first, then = sorted((fastest, slowest), key=list(self.probes_ms).index)
        return (f"the machine's speed moved during this run: a fixed loop took "
                f"{self.probes_ms[first]:.2f} ms {when(first)} and "
                f"{self.probes_ms[then]:.2f} ms {when(then)} ({drift:.2f}x): ratios "
                "between those phases may be off by as much; repeat the run")

    def report(self) -> dict[str, Any]:
        return {"probe_ms": dict(self.probes_ms), "drift": self.drift()}
