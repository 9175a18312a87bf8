"""Where a DAG call's first trigger goes: straight to its source's pinned worker when the client
can build the schedule as a scheduler would, else to the schedulers as a DagCall.

A scheduler on the path of every DAG call costs a broker hop (about half a millisecond) for
what is, in the common case, a copy of etcd: the DAG's definition, its pins and the live
workers. The client reads those itself (a thread of its own reads them again once a second, as for
client/routing.py: client/viewkeeper.py), builds
the DagSchedule and BEGIN trigger the scheduler would build (scheduler/dags.py call_dag) and
publishes it `mandatory` to the source's worker queue. Three things keep that safe:

* Anything only a scheduler decides keeps the scheduler path: a DAG that is not known here or
  not ready, a function without a live pinned worker, a worker seen restarted (a new
  incarnation under the same id) since the last look, several sources (their triggers would
  have to all go or all fall back), speculative copies, resource tags, batching functions,
  continuations, references to stored keys, arguments for functions the DAG lacks (the
  scheduler answers INVALID_REQUEST).
* A trigger the broker cannot route (the worker's queue is gone) comes back, and the call is
  sent to the schedulers as a DagCall, as it would have been (client/pump.py send_direct).
* The worker runs a client's trigger only while it holds that very pin; otherwise (the pin
  moved, the DAG was deleted, all within the client's second) it hands the call to the
  schedulers (worker/direct.py). So what the client's view may miss costs a hop, never a
  wrong placement or a call of a deleted DAG.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from droplet.client.viewkeeper import RECHECK_S, STALE_S, ViewKeeper
from droplet.graph import BEGIN, call_error, sources
from droplet.proto import pb
from droplet.proto.envelope import SCHEDULE_ROOM_BYTES
from droplet.proto.replies import call_ref
from droplet.settings import MAX_MESSAGE_BYTES
from droplet.store import serializer
from droplet.store.metadata import Metadata


class DagRoutes:
    def __init__(self, metadata: Metadata, clock: Callable[[], float] = time.monotonic,
                 recheck_s: float = RECHECK_S,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._metadata = metadata
        self._max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        # The DAGs called since the last look: only those are read again (a client that
        # called a DAG once does not read it every second for ever).
        self._dags: dict[str, pb.DagRecord] = {}
        self._called: set[str] = set()
        self._pins: dict[tuple[str, str], str] = {}  # (dag, function) -> worker id
        self._live: dict[str, str] = {}  # worker id -> incarnation
        self._restarted: set[str] = set()  # new incarnation since the look before
        self.view = ViewKeeper(self._refresh, "droplet-dag-view", clock, recheck_s,
                               max(STALE_S, 2 * recheck_s))

    def close(self) -> None:
        self.view.close()

    def forget(self, dag_name: str) -> None:
        """This client changed the DAG (register, delete): look again before the next call."""
        with self._lock:  # (what a read begun before this found is not kept: view.forgets())
            self._dags.pop(dag_name, None)
            self.view.forget()

    def _refresh(self) -> None:
        with self._lock:
            called, self._called = self._called, set()
            forgets = self.view.forgets()
        records = {name: self._metadata.get_dag(name) for name in called}
        pins = {(p.dag_name, p.function_name): p.worker_id for p in self._metadata.pins()}
        live = {w.id: w.incarnation for w in self._metadata.workers()}
        with self._lock:
            if forgets != self.view.forgets():
                self._called |= called
                return  # the view stays unread: the next call reads it
            self._restarted = {w for w, inc in live.items()
                               if w in self._live and self._live[w] != inc}
            self._pins, self._live = pins, live
            self._dags = {name: r for name, r in records.items() if r is not None}
            # (under the lock: a forget() after the check above is not undone by it)
            self.view.looked()

    def _dag(self, name: str) -> pb.DagRecord | None:
        if not self.view.usable():
            self._refresh()
        with self._lock:
            self._called.add(name)
            record = self._dags.get(name)
            forgets = self.view.forgets()
        if record is None:
            record = self._metadata.get_dag(name)
            if record is not None:
                with self._lock:
                    if forgets == self.view.forgets():
                        self._dags[name] = record
        return record

    def locations(self, dag: pb.Dag) -> dict[str, str] | None:
        """function -> live pinned worker for every function of the DAG, or None."""
        with self._lock:
            places = {f: self._pins.get((dag.name, f), "") for f in dag.functions}
            if all(w and w in self._live and w not in self._restarted
                   for w in places.values()):
                return places
        return None

    def trigger(self, call: pb.DagCall, now: float | None = None
                ) -> tuple[str, pb.DagTrigger] | None:
        """(worker id, BEGIN trigger) for a call the client may send straight to the worker
        of its DAG's one source; None: the call goes through a scheduler."""
        if (call.attempt or call.continuations or call.HasField("chained_input")
                or any(serializer.reference_keys(args.values)
                       for args in call.function_args.values())):
            return None
        record = self._dag(call.name)
        if record is None or not record.ready:
            return None  # the scheduler answers NO_SUCH_DAG (or knows better)
        dag = record.dag
        if (dag.speculative or dag.function_resources or dag.batching_functions
                or call_error(call, dag) or len(sources(dag)) != 1):
            return None
        places = self.locations(dag)
        if places is None:
            return None
        trigger = begin_trigger(call, dag, places, now)
        if trigger.ByteSize() + SCHEDULE_ROOM_BYTES > self._max_message_bytes:
            return None  # the scheduler refuses it (INVALID_REQUEST), as any schedule as big
        return places[sources(dag)[0]], trigger


def begin_trigger(call: pb.DagCall, dag: pb.Dag, places: dict[str, str],
                  now: float | None = None) -> pb.DagTrigger:
    """The BEGIN trigger a scheduler would send (scheduler/dags.py call_dag), except for the
    reply address: the worker takes it from the message's reply-to (worker/direct.py)."""
    schedule = pb.DagSchedule(
        id=str(uuid.uuid4()), call_id=call.call_id, start_time=time.time() if now is None
        else now, consistency=call.consistency, output_key=call.output_key,
        client_id=call.client_id, direct_response=call.direct_response,
        snapshot_revision=call.snapshot_revision if call.consistency == pb.MULTI else 0,
        min_revision=call.min_revision,
    )
    schedule.dag.CopyFrom(dag)
    for function in dag.functions:
        schedule.locations[function] = places[function]
        if function in call.function_args:
            schedule.arguments[function].CopyFrom(call.function_args[function])
    source = sources(dag)[0]
    trigger = pb.DagTrigger(id=schedule.id, source=BEGIN, target_function=source,
                            call=call_ref(schedule), trace=call.trace,
                            trace_context=call.trace_context)
    trigger.schedule.CopyFrom(schedule)
    return trigger
