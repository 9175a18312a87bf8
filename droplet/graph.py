"""The shape of a DAG: sources, sinks, the order of upstream results, and validation.

Shared by the scheduler (which validates and schedules), the worker (which joins and
forwards) and the client (which schedules a DAG call itself when it can), so all three read a
DAG, and a call of one, the same way.
"""

from __future__ import annotations

from droplet.broker_config.names import check_name
from droplet.proto import pb
from droplet.speculation import speculation_error

BEGIN = "BEGIN"  # the trigger a source function waits for
OUTPUT = "$output"  # the virtual node that joins the results of several sinks


def upstreams(dag: pb.Dag, function: str) -> list[str]:
    """The functions feeding `function`, in the order their connections were given."""
    return [c.source for c in dag.connections if c.sink == function]


def downstreams(dag: pb.Dag, function: str) -> list[str]:
    return [c.sink for c in dag.connections if c.source == function]


def sources(dag: pb.Dag) -> list[str]:
    fed = {c.sink for c in dag.connections}
    return [f for f in dag.functions if f not in fed]


def sinks(dag: pb.Dag) -> list[str]:
    feeding = {c.source for c in dag.connections}
    return [f for f in dag.functions if f not in feeding]


def shape_error(dag: pb.Dag) -> str | None:
    """Why a DAG is malformed (names, unknown endpoints, duplicates, cycles), or None."""
    try:
        check_name("DAG", dag.name)
        for name in dag.functions:
            check_name("function", name)
    except ValueError as exc:
        return str(exc)
    if not dag.functions:
        return "a DAG needs at least one function"
    if len(set(dag.functions)) != len(dag.functions):
        return "a DAG lists each function once"
    known = set(dag.functions)
    pairs = [(c.source, c.sink) for c in dag.connections]
    for source, sink in pairs:
        if source not in known or sink not in known:
            return f"connection {source!r} -> {sink!r} names a function outside the DAG"
    if len(set(pairs)) != len(pairs):
        return "a connection is listed twice"
    indegree = {f: 0 for f in dag.functions}
    for _, sink in pairs:
        indegree[sink] += 1
    ready = [f for f, d in indegree.items() if d == 0]
    visited = 0
    while ready:
        node = ready.pop()
        visited += 1
        for sink in downstreams(dag, node):
            indegree[sink] -= 1
            if indegree[sink] == 0:
                ready.append(sink)
    if visited != len(dag.functions):
        return "the connections form a cycle"
    return speculation_error(dag)


def call_error(dag_call: pb.DagCall, dag: pb.Dag) -> str | None:
    """Why this call of `dag` cannot run. Arguments for a function the DAG does not have (a
    misspelt name, or a continuation's arg_map meant for another DAG) would otherwise be
    dropped without a word, and the function would run without them."""
    unknown = sorted(set(dag_call.function_args) - set(dag.functions))
    if unknown:
        return (f"arguments given for {unknown}, which are not functions of DAG "
                f"{dag.name!r} (its functions: {sorted(dag.functions)})")
    if dag_call.continuations and dag_call.consistency == pb.MULTI:
        return "a MULTI DAG call cannot have a continuation (its writes commit at its end)"
    return None
