"""Placement: which queue a function call goes to. A pure function of the fleet state.

A call whose arguments reference stored keys goes to the idle worker (nothing in hand, not in
back-off) that caches the most of them (locality; ties go to the least loaded); when no idle
worker caches any, it goes to the shared work queue like any other call: idle first beats
locality. Every worker consumes the shared queue with prefetch 1, and pauses it while it runs
a step of its own: RabbitMQ hands a call to a worker with nothing in hand, and under full load
calls wait in the queue rather than fail. NO_RESOURCES only when no worker is alive.
"""

from __future__ import annotations

from collections.abc import Sequence

from droplet.scheduler.state import SchedulerState

# A worker busier than this over its last status interval takes no locality placements.
BACKOFF_UTILISATION = 0.9


def load_of(state: SchedulerState, worker_id: str) -> float:
    status = state.workers[worker_id]
    return status.utilisation + status.queue_depth


def pick_queue(state: SchedulerState, reference_keys: Sequence[str]) -> str | None:
    """The queue for a call, or None when no worker is alive (NO_RESOURCES)."""
    if not state.workers:
        return None
    eligible = [w for w in state.workers
                if w not in state.backoff and state.workers[w].queue_depth == 0]
    if reference_keys and eligible:
        wanted = set(reference_keys)
        scored = [
            (len(wanted.intersection(state.workers[w].cached_keys)), -load_of(state, w), w)
            for w in eligible
        ]
        best_hits, _, best = max(scored)
        if best_hits > 0:
            return state.names.worker(best)
    return state.names.work
