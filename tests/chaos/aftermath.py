"""The state of the fleet after the quiet period: what the checker reads from etcd and the
broker, and the calls it makes, once the faults have stopped and the fleet has had time to
heal. Each function returns its anomalies as lines for the report.

These read etcd with the client's kv (`/<ns>/dags/`, `/pins/`, `/workers/`, `/claims/`) and
parse the records with the proto classes, the way `droplet status` does: the only places
where the checker depends on more than the public client API.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import droplet
from droplet.proto import pb  # the same module as droplet.pb
from tests.chaos import functions as fx
from tests.chaos.history import DOCUMENTED_ERRORS, error_name
from tests.private_rabbit import QueueDepths


def _live_workers(client: Any) -> dict[str, tuple[str, str]]:
    """Workers alive under their lease, with the pin each says it holds."""
    items, _ = client.kv.get_prefix(client.settings.etcd_prefix + "workers/")
    statuses = map(pb.WorkerStatus.FromString, items.values())
    return {s.id: (s.pinned_dag, s.pinned_function) for s in statuses}


def dag_problems(client: Any, note: Callable[[str], None]) -> list[str]:
    """dag-half-made: a DAG missing or not ready, or a function of a ready DAG without
    exactly one pin record on a live worker."""
    prefix = client.settings.etcd_prefix
    dags, _ = client.kv.get_prefix(prefix + "dags/")
    pins, _ = client.kv.get_prefix(prefix + "pins/")
    live = _live_workers(client)
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pin in map(pb.PinRecord.FromString, pins.values()):
        holders[(pin.dag_name, pin.function_name)].append(pin.worker_id)
    records = {r.dag.name: r for r in map(pb.DagRecord.FromString, dags.values())}
    found = [f"DAG {name} is gone from etcd" for name in (fx.LINE_DAG, fx.FAN_DAG)
             if name not in records]
    for name, record in records.items():
        if not record.ready:
            found.append(f"DAG {name} is not ready (creator {record.creator})")
            continue
        for function in record.dag.functions:
            where = holders.get((name, function), [])
            if len(where) != 1 or where[0] not in live:
                found.append(f"{name}/{function}: pin records on {where}, live workers "
                             f"{sorted(live)}")
            elif live[where[0]] != (name, function):
                # Calls are routed by the pin record, so this is not counted; but the
                # worker's own status (what `droplet status` shows) disagrees with it.
                note(f"{name}/{function} is pinned on {where[0]}, whose status says it "
                     f"holds {live[where[0]]}")
    return found


def stuck(client: Any, queue_depths: Callable[[], QueueDepths] | None, salt: int, x: int,
          final_timeout_s: float) -> list[str]:
    """stuck: messages left in the namespace's queues, claims left in etcd, or a call that
    does not complete on the healed fleet (documented errors are retried meanwhile)."""
    found = []
    namespace = client.settings.namespace
    if queue_depths is not None:
        live = _live_workers(client)
        for queue, ready, unacked in queue_depths():
            if queue.startswith(namespace + ".") and (ready or unacked):
                owner = queue.rsplit(".", 1)[-1] if ".worker." in queue else ""
                whose = f" (worker {owner} {'alive' if owner in live else 'gone'})" \
                    if owner else ""
                found.append(f"queue {queue}{whose}: {ready} ready, {unacked} unacked")
    claims, _ = client.kv.get_prefix(client.settings.etcd_prefix + "claims/")
    found += [f"claim left in etcd: {key}" for key in claims]
    finals: list[tuple[str, Callable[[float], Any], Any]] = [
        ("plain call", lambda s: client.call(fx.PLAIN, x).get(timeout=s),
         fx.plain_expected(x, salt)),
        ("linear DAG", lambda s: client.call_dag(
            fx.LINE_DAG, {fx.LINE_A: ["chain", x, False]}, direct_response=True, timeout=s),
         fx.chain_expected(x, salt)),
        ("fan-in DAG", lambda s: client.call_dag(
            fx.FAN_DAG, {fx.FAN_S1: [x], fx.FAN_S2: [x], fx.FAN_J: [x]}).get(timeout=s),
         fx.fan_expected(x)),
    ]
    for what, call, expected in finals:
        outcome = _final(call, final_timeout_s)
        if outcome != expected:
            found.append(f"final {what} on the healed fleet: {outcome!r}, "
                         f"expected {expected!r}")
    return found


def _final(call: Callable[[float], Any], timeout_s: float) -> Any:
    """A call's value, retried after documented errors until the deadline."""
    deadline = time.monotonic() + timeout_s
    outcome: Any = "no attempt"
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            return call(remaining)
        except droplet.DropletError as exc:
            outcome = f"{error_name(exc)}: {str(exc)[:120]}"
            if error_name(exc) not in DOCUMENTED_ERRORS:
                return outcome
            time.sleep(2)
    return outcome
