"""Speculative DAG functions (the original's MULTIEXEC): where a step's copies run.

`register_dag(name, [("f", [None]), ...])` makes `f` speculative: each call of the DAG runs `f`
on its pinned worker (copy 0) and on up to `copies - 1` other live workers (copies 1, 2, ...,
chosen by the scheduler when it schedules the call and carried in the schedule); the first
copy whose result is not one of `invalid_results` wins (worker/copies.py decides, once, in
etcd). Shared by the scheduler, which places the copies and sends the sources' triggers, and the
worker, which forwards a result to every copy of a speculative downstream.

A speculative function has at most one upstream: a fan-in step would need its join made once
before its copies could start, which this does not do (refused when the DAG is registered).
"""

from __future__ import annotations

from droplet.proto import pb

# Largest DAG definition, invalid_results included. The DAG is stored in etcd (which refuses
# requests over ~1.5 MiB; a scheduler that cannot store it would take the request back again
# and again) and travels in every trigger and notice of every call of it.
MAX_DAG_BYTES = 256 * 1024


def speculative_spec(dag: pb.Dag, function: str) -> pb.Speculative | None:
    for spec in dag.speculative:
        if spec.function == function:
            return spec
    return None


def speculation_error(dag: pb.Dag) -> str | None:
    """Why the DAG's speculative functions are malformed, or None."""
    if (size := dag.ByteSize()) > MAX_DAG_BYTES:
        return (f"DAG {dag.name!r} takes {size} bytes, over {MAX_DAG_BYTES}: keep "
                "invalid_results to a few small values")
    seen: set[str] = set()
    for spec in dag.speculative:
        if spec.function not in dag.functions:
            return f"speculative function {spec.function!r} is not a function of the DAG"
        if spec.function in seen:
            return f"speculative function {spec.function!r} is listed twice"
        seen.add(spec.function)
        if spec.copies < 1:
            return f"speculative function {spec.function!r} needs at least one copy"
        if sum(c.sink == spec.function for c in dag.connections) > 1:
            return (f"speculative function {spec.function!r} has several upstreams: a "
                    "speculative function has at most one")
    return None


def destinations(schedule: pb.DagSchedule, function: str) -> list[tuple[str, int]]:
    """(worker id, copy) of every copy of `function` in this call: its pinned worker alone
    for an ordinary function."""
    places = [(schedule.locations[function], 0)]
    if function in schedule.copy_places:
        places += [(w, i) for i, w in enumerate(schedule.copy_places[function].workers, 1)]
    return places


def copies_scheduled(schedule: pb.DagSchedule, function: str) -> int:
    if function not in schedule.copy_places:
        return 1
    return 1 + len(schedule.copy_places[function].workers)
