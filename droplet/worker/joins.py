"""Per-schedule DAG state on a worker: a function runs once its schedule and every trigger it
waits for have arrived (fan-in). Arrival order does not matter; a trigger seen twice (a
redelivery) counts once. State that can never complete is freed after `ttl_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from droplet.graph import OUTPUT, sinks
from droplet.proto import pb

JoinKey = tuple[str, str]  # (schedule id, target function)


@dataclass
class Join:
    key: JoinKey
    created: float
    schedule: pb.DagSchedule | None = None
    triggers: dict[str, pb.DagTrigger] = field(default_factory=dict)

    def expected(self) -> list[str]:
        if self.schedule is None:
            return []
        if self.key[1] == OUTPUT:
            return sinks(self.schedule.dag)
        return list(self.schedule.triggers)

    @property
    def aborted(self) -> bool:
        return any(t.aborted for t in self.triggers.values())

    @property
    def ready(self) -> bool:
        if self.aborted:
            return True
        return self.schedule is not None and all(s in self.triggers for s in self.expected())


class ScheduleTable:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._joins: dict[JoinKey, Join] = {}
        self._finished: dict[JoinKey, float] = {}

    def __len__(self) -> int:
        return len(self._joins)

    def _join(self, key: JoinKey) -> Join | None:
        if key in self._finished:
            return None  # already ran or was abandoned: late arrivals are dropped
        join = self._joins.get(key)
        if join is None:
            join = self._joins[key] = Join(key, self._clock())
        return join

    def add_schedule(self, schedule: pb.DagSchedule) -> Join | None:
        """Records a schedule; returns the join when it just became ready."""
        join = self._join((schedule.id, schedule.target_function))
        if join is None:
            return None
        join.schedule = schedule
        return self._take_if_ready(join)

    def add_trigger(self, trigger: pb.DagTrigger) -> Join | None:
        join = self._join((trigger.id, trigger.target_function))
        if join is None:
            return None
        join.triggers.setdefault(trigger.source, trigger)
        return self._take_if_ready(join)

    def _take_if_ready(self, join: Join) -> Join | None:
        if not join.ready:
            return None
        del self._joins[join.key]
        self._finished[join.key] = self._clock()
        return join

    def sweep(self) -> int:
        """Frees joins older than ttl_s (their missing triggers will never come)."""
        now = self._clock()
        stale = [k for k, j in self._joins.items() if now - j.created > self._ttl_s]
        for key in stale:
            del self._joins[key]
            self._finished[key] = now
        self._finished = {k: t for k, t in self._finished.items() if now - t <= self._ttl_s}
        return len(stale)
