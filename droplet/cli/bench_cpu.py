"""CPU the fleet spends per call and at rest, read from /proc.

How large a fleet can grow is bounded by CPU, not by the latency of one call: the CPU a worker
spends per call says how many calls one worker core carries, and the CPU an idle worker spends
(status puts, lease keep-alives, watch streams, poll loops) says what each extra worker costs
the machine and etcd. `droplet bench --sweep` reports both for each fleet size.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> float | None:
    """User + system CPU seconds used so far by these processes; None where /proc is missing
    (not Linux), so the figures are left out rather than made up."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                # The command name (field 2) may hold spaces: count fields after its ')'.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        total += (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return total


def settle(pids: list[int], idle_pct: float = 2.0, timeout_s: float = 20.0,
           window_s: float = 0.5) -> float:
    """Waits until these processes together use under idle_pct% of a core per process (a
    fleet just started is still importing, loading its mirrors and opening its watches: on a
    crowded host that would be measured as the cost of a call); returns how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = cpu_seconds(pids)
        time.sleep(window_s)
        after = cpu_seconds(pids)
        if before is None or after is None:
            break
        if (after - before) / window_s * 100 <= idle_pct * len(pids):
            break
    return time.monotonic() - started


@dataclass(frozen=True)
class FleetCpu:
    """What `--sweep` reports for one fleet size, next to its burst rate."""

    worker_cpu_us_per_call: float
    scheduler_cpu_us_per_call: float
    idle_worker_cpu_pct: float

    @classmethod
    def median_of(cls, figures: list[FleetCpu]) -> FleetCpu:
        """Each figure's median over rounds of the same fleet size (at least one)."""
        return cls(**{field.name: statistics.median(getattr(f, field.name) for f in figures)
                      for field in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, float]:
        return {"worker_cpu_us_per_call": self.worker_cpu_us_per_call,
                "scheduler_cpu_us_per_call": self.scheduler_cpu_us_per_call,
                "idle_worker_cpu_pct": self.idle_worker_cpu_pct}


def measure_fleet_cpu(
    workers: list[int], schedulers: list[int], calls: int, run: Callable[[], float],
    idle_s: float = 5.0,
) -> tuple[float, FleetCpu | None]:
    """Runs `run` (which makes `calls` calls and returns its rate), then watches the fleet idle
    for idle_s; returns the rate and the CPU figures (None off Linux)."""
    before_w, before_s = cpu_seconds(workers), cpu_seconds(schedulers)
    rate = run()
    after_w, after_s = cpu_seconds(workers), cpu_seconds(schedulers)
    time.sleep(1.0)  # let the last results, status puts and acks of the burst settle
    idle_from = cpu_seconds(workers)
    started = time.monotonic()
    time.sleep(idle_s)
    idle_to = cpu_seconds(workers)
    elapsed = time.monotonic() - started
    if None in (before_w, before_s, after_w, after_s, idle_from, idle_to) or not workers:
        return rate, None
    assert before_w is not None and after_w is not None and before_s is not None
    assert after_s is not None and idle_from is not None and idle_to is not None
    return rate, FleetCpu(
        worker_cpu_us_per_call=(after_w - before_w) / calls * 1e6,
        scheduler_cpu_us_per_call=(after_s - before_s) / calls * 1e6,
        idle_worker_cpu_pct=(idle_to - idle_from) / elapsed / len(workers) * 100,
    )
