"""Placement of calls that cannot take the shared work queue: calls that need resource tags
(only some workers may run them) and calls of batching functions (they gather in a worker's
own queue, where the worker takes many at once: worker/batching.py).

Such a call goes to the own queue of a live worker whose tags satisfy its needs, idle first:
a worker whose last status shows nothing in hand is preferred to any that is busy (a burst is
spread over the idle ones by what this scheduler placed on each since its status was written);
among equals, the fewest calls in hand (its status plus those placed since), then not backing
off, then the most of the call's stored keys cached, then the least busy. When no live worker
has the tags the call is answered NO_RESOURCES at once. A worker that dies with calls in its
queue has them moved to the schedulers, which place them again the same way
(scheduler/reaper.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from droplet import resources
from droplet.errors import InvalidArgumentError
from droplet.proto import pb
from droplet.scheduler.state import SchedulerState
from droplet.store.metadata import Metadata


def qualified_workers(state: SchedulerState, needs: Mapping[str, float]) -> list[str]:
    """Live workers whose tags satisfy `needs`."""
    return sorted(w for w, status in state.workers.items()
                  if resources.satisfies(status.resources, needs))


def pick_tagged(state: SchedulerState, needs: Mapping[str, float],
                reference_keys: Sequence[str] = ()) -> str | None:
    """The own queue of the worker to run a call with these needs; None: no live worker
    has them (NO_RESOURCES)."""
    candidates = qualified_workers(state, needs)
    if not candidates:
        return None
    wanted = set(reference_keys)

    def score(worker: str) -> tuple[bool, float, bool, int, float, str]:
        status = state.workers[worker]
        in_hand = status.queue_depth + placed_since_status(state, worker)
        hits = len(wanted.intersection(status.cached_keys)) if wanted else 0
        return (status.queue_depth > 0, in_hand, worker in state.backoff, -hits,
                status.utilisation, worker)

    best = min(candidates, key=score)
    state.placed[best] = (state.workers[best].updated_at, placed_since_status(state, best) + 1)
    return state.names.worker(best)


def placed_since_status(state: SchedulerState, worker: str) -> int:
    """Calls this scheduler placed on the worker since its status record was written (the
    record does not count them yet)."""
    stamp, count = state.placed.get(worker, (0.0, 0))
    return count if stamp == state.workers[worker].updated_at else 0


# -- pins of DAG functions ---------------------------------------------------------------------


def tags_error(dag: pb.Dag) -> str | None:
    """Why a DAG's resources, batching or colocated lists are malformed, or None."""
    known = set(dag.functions)
    named = [*dag.function_resources, *dag.batching_functions,
             *(f for group in dag.colocated for f in group.functions)]
    outside = sorted({f for f in named if f not in known})
    if outside:
        return f"resources, batching_functions or colocated name functions outside the DAG: " \
               f"{outside}"
    for function, needs in dag.function_resources.items():
        try:
            resources.checked(dict(needs.amounts), f"resources of {function!r}")
        except InvalidArgumentError as exc:
            return str(exc)
    return None


def function_needs(dag: pb.Dag, function: str, metadata: Metadata) -> dict[str, float]:
    """What the worker a DAG function is pinned on must have: the DAG's needs for it and
    those the function was registered with."""
    spec = metadata.get_function(function)
    return resources.dag_function_needs(dag, function, spec.resources if spec else None)


def pinning_order(dag: pb.Dag, needs: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Functions that need tags are pinned first, so that a tagged worker is not taken by a
    function that could have run anywhere."""
    order = list(dag.functions)
    return sorted(order, key=lambda f: (not needs.get(f), order.index(f)))


def colocated_hosts(state: SchedulerState, dag: pb.Dag, function: str,
                    locations: Mapping[str, str]) -> set[str]:
    """Hosts of the workers holding functions colocated with `function` (best effort)."""
    return {state.workers[locations[f]].host for f in resources.colocated_with(dag, function)
            if f in locations and locations[f] in state.workers}


def preferred_workers(state: SchedulerState, candidates: Sequence[str],
                      needs: Mapping[str, float], hosts: set[str]) -> list[str]:
    """Of the free workers that may take a pin: those that satisfy `needs`, then those on
    `hosts` (colocation) when any is, then those with the fewest tags (a tagged worker stays
    free for a function that needs it)."""
    pool = [w for w in candidates if resources.satisfies(state.workers[w].resources, needs)]
    near = [w for w in pool if state.workers[w].host in hosts]
    pool = near or pool
    if not pool:
        return []
    fewest = min(len(state.workers[w].resources) for w in pool)
    return [w for w in pool if len(state.workers[w].resources) == fewest]
