"""Builders for handler tests: in-memory store, fleet state and recorded outboxes."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from droplet.broker_config.names import QueueNames
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler.state import SchedulerState
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.commits import Committed, Committer
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from droplet.store.metadata import Metadata
from droplet.store.values import ValueStore
from droplet.worker.functions import FunctionCache
from droplet.worker.handlers import WorkerState
from droplet.worker.joins import JoinRecords
from droplet.worker.library import Library

SETTINGS = Settings(namespace="unit")
NAMES = QueueNames("unit")


def metadata(kv: MemoryKV) -> Metadata:
    return Metadata(kv, SETTINGS, Signer(None))


def create_function(md: Metadata, fn: Callable[..., Any], name: str) -> None:
    md.put_function(pb.Function(name=name, body=cloudpickle.dumps(fn)))


def function_call(name: str, args: list[Any], response_key: str = "resp-key") -> pb.FunctionCall:
    call = pb.FunctionCall(name=name, request_id=12, response_key=response_key,
                           call_id=response_key)
    for arg in args:
        serializer.dump(arg, call.arguments.values.add())
    return call


def worker_status(worker_id: str, cached: list[str] | None = None) -> pb.WorkerStatus:
    return pb.WorkerStatus(id=worker_id, host="h", pid=1, cached_keys=cached or [])


def scheduler_state(*worker_ids: str) -> SchedulerState:
    state = SchedulerState(NAMES)
    for w in worker_ids:
        state.workers[w] = worker_status(w)
    return state


def worker_state(kv: MemoryKV, worker_id: str = "w1") -> WorkerState:
    md = metadata(kv)
    values = ValueStore(kv, SETTINGS)
    keys = StoreKeys(SETTINGS.etcd_prefix)
    return WorkerState(
        worker_id=worker_id,
        names=NAMES,
        keys=keys,
        functions=FunctionCache(md.get_function),
        library=Library(worker_id, values),
        joins=JoinRecords(kv, keys, Signer(None)),
        stored_outcome=values.outcome,
        pin_record=lambda: _pin(kv, md, worker_id),
    )


def _pin(kv: MemoryKV, md: Metadata, worker_id: str) -> pb.PinRecord | None:
    raw = kv.get(md.keys.pin(worker_id))
    if raw is None:
        return None
    record = pb.PinRecord()
    record.ParseFromString(raw)
    return record


def linear_dag(name: str, functions: list[str]) -> pb.Dag:
    dag = pb.Dag(name=name, functions=functions)
    for source, sink in itertools.pairwise(functions):
        dag.connections.add(source=source, sink=sink)
    return dag


class RecordingPins:
    """The PinPort of a test: answers from a queue, records every request (seed pin_socket)."""

    def __init__(self, answers: list[bool] | None = None) -> None:
        self.answers = list(answers or [])
        self.pinned: list[tuple[str, str, str]] = []
        self.unpinned: list[tuple[str, str, str]] = []
        self.waited = 0.0
        self.on_wait: Callable[[], None] | None = None  # what "time passing" does

    def pin(self, worker_id: str, dag_name: str, function_name: str) -> bool:
        self.pinned.append((worker_id, dag_name, function_name))
        return self.answers.pop(0) if self.answers else False

    def unpin(self, worker_id: str, dag_name: str, function_name: str) -> None:
        self.unpinned.append((worker_id, dag_name, function_name))

    def wait(self, seconds: float) -> None:
        self.waited += seconds
        if self.on_wait is not None:
            self.on_wait()


def stored(kv: MemoryKV, key: str) -> Any:
    return ValueStore(kv, SETTINGS).get(key)


def commit(kv: MemoryKV, out: Outbox) -> list[Committed]:
    """Stores an outbox's durable writes, as the message cycle would."""
    committer = Committer(ValueStore(kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    return [committer.apply(item.commit) for item in out.durable]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Until condition() holds; fails with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def workers_seen(kv: MemoryKV, keys: StoreKeys, scheduler_id: str) -> int | None:
    """How many workers a scheduler's record says it sees (None: no record)."""
    raw = kv.get(keys.scheduler(scheduler_id))
    return None if raw is None else pb.SchedulerStatus.FromString(raw).workers_seen


def thread_queued_s(native_id: int) -> float:
    """Seconds a thread of this process has spent runnable but kept from a core (Linux's
    schedstat; 0.0 elsewhere): a timing test takes that off a thread's lateness, which on a
    crowded host is the host's, not the code's."""
    path = f"/proc/self/task/{native_id}/schedstat"
    if not os.path.exists(path):
        return 0.0
    with open(path, encoding="ascii") as stat:
        return int(stat.read().split()[1]) / 1e9
