"""Cluster metadata in etcd: functions, DAGs, pins, and fleet membership records.

Function bodies are code. With a fleet secret they are stored signed, and the signature is bound
to the function's name and to the etcd (create revision, version) of its registration: a body
copied under another name, or an older body restored under the same name (even after deleting
and re-creating the key), fails verification, so someone who can write to etcd cannot make
workers run code. A first registration therefore reserves its key before signing.

Writes that two schedulers could race on are etcd transactions: a DAG's name, its pins (a pin
under pins/<worker> and a placement under placements/<dag>/<function>, claimed together, so a
worker holds one function and a function one worker), and a DAG becoming ready (only if it was
not deleted meanwhile). A DAG being created lives under its creator's lease until it is ready:
if the creator dies, the half-made DAG disappears on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError

from droplet.errors import SignatureError, StoreError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer, function_context, value_context
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Delete, Entry, ModRevisionIs, Put, ValueIs, VersionIs

log = logging.getLogger(__name__)

_REGISTRATION_ATTEMPTS = 5
T = TypeVar("T")
# A function is one etcd record: etcd refuses a request over its --max-request-bytes (1.5 MiB
# by default). A scheduler took that refusal for etcd being away and put the registration back
# in the admin queue, again and again for ever, and every later admin request of the fleet
# waited behind it (the client: "no scheduler answered within 30s").
MAX_FUNCTION_BYTES = 1536 * 1024 - 64 * 1024  # (room for the key and the signature)


def function_too_large(function: pb.Function) -> str | None:
    """Why a registration cannot be stored (None: it can)."""
    if (size := function.ByteSize()) <= MAX_FUNCTION_BYTES:
        return None
    return (f"function {function.name!r} takes {size} bytes pickled, over {MAX_FUNCTION_BYTES} "
            "(one etcd record): keep large data out of its closure and init_args; store it "
            "with put_object() and read it with lib.get(), or load it in a class's __init__")


@dataclass(frozen=True)
class Answer:
    """The answer to an admin request, kept under its request id."""

    request_id: str
    response: pb.GenericResponse
    lease: int | None = None


class Metadata:
    def __init__(self, kv: KV, settings: Settings, signer: Signer) -> None:
        self.kv = kv
        self.keys = StoreKeys(settings.etcd_prefix)
        self._signer = signer

    # -- functions -------------------------------------------------------------------------

    def put_function(self, function: pb.Function) -> None:
        key = self.keys.function(function.name)
        payload = function.SerializeToString()
        if not self._signer.enabled:
            self.kv.put(key, self._signer.seal(payload))
            return
        for _ in range(_REGISTRATION_ATTEMPTS):
            entry = self.kv.get_entries([key]).get(key)
            if entry is None:
                self.kv.txn([VersionIs(key, 0)], [Put(key, b"")])  # reserve the key
                continue
            context = function_context(function.name, entry.create_revision, entry.version + 1)
            sealed = self._signer.seal(payload, context)
            ok, _ = self.kv.txn([ModRevisionIs(key, entry.mod_revision)], [Put(key, sealed)])
            if ok:
                return
        raise StoreError(f"registering {function.name!r} raced other registrations; try again")

    def open_function(self, name: str, entry: Entry) -> pb.Function | None:
        """Parses a stored function; raises SignatureError when its signature is wrong here.
        None for a key reserved by a registration in progress."""
        if not entry.value:
            return None
        context = function_context(name, entry.create_revision, entry.version)
        function = pb.Function()
        function.ParseFromString(self._signer.open(entry.value, context))
        return function

    def get_function(self, name: str) -> pb.Function | None:
        key = self.keys.function(name)
        entry = self.kv.get_entries([key]).get(key)
        return None if entry is None else self.open_function(name, entry)

    def function_names(self) -> list[str]:
        items, _ = self.kv.get_prefix(self.keys.functions)
        return sorted(StoreKeys.tail(k, self.keys.functions) for k, v in items.items() if v)

    def delete_function(self, name: str) -> bool:
        return self.kv.delete(self.keys.function(name)) > 0

    # -- DAGs ------------------------------------------------------------------------------

    def create_dag(self, dag: pb.Dag, creator: str, request_id: str,
                   lease: int | None) -> bytes | None:
        """Claims the DAG's name (not ready yet, under the creator's lease); returns the record
        written, or None when the name is taken."""
        record = pb.DagRecord(dag=dag, ready=False, creator=creator,
                              request_id=request_id).SerializeToString()
        key = self.keys.dag(dag.name)
        ok, _ = self.kv.txn([VersionIs(key, 0)], [Put(key, record, lease)])
        return record if ok else None

    def mark_dag_ready(self, dag: pb.Dag, pending: bytes, answer: Answer | None = None) -> bool:
        """Makes a DAG ready (for good, no lease) unless its record changed: deleted, or its
        creator's lease ran out meanwhile. The request's answer is kept in the same step."""
        key = self.keys.dag(dag.name)
        request_id = answer.request_id if answer else ""
        record = pb.DagRecord(dag=dag, ready=True, request_id=request_id).SerializeToString()
        ok, _ = self.kv.txn([ValueIs(key, pending)], [Put(key, record), *self._keep(answer)])
        return ok

    def delete_pending_dag(self, name: str, pending: bytes) -> bool:
        """Deletes a half-made DAG, only if it is still the one this request made."""
        key = self.keys.dag(name)
        ok, _ = self.kv.txn([ValueIs(key, pending)], [Delete(key)])
        return ok

    def get_dag(self, name: str) -> pb.DagRecord | None:
        raw = self.kv.get(self.keys.dag(name))
        return None if raw is None else parse_dag_record(raw)

    def delete_dag(self, name: str, answer: Answer | None = None) -> bool:
        """Deletes a DAG record; with an answer, keeps it in the same transaction, so that a
        redelivered delete answers as the first one did."""
        key = self.keys.dag(name)
        raw = self.kv.get(key)
        if raw is None:
            return False
        ok, _ = self.kv.txn([ValueIs(key, raw)], [Delete(key), *self._keep(answer)])
        return ok

    # -- answers to admin requests ---------------------------------------------------------

    def keep_answer(self, answer: Answer) -> None:
        self.kv.txn([], self._keep(answer))

    def _keep(self, answer: Answer | None) -> list[Put]:
        """Answers are signed, bound to their key, like stored values: one planted in etcd
        is never handed out (signed, by a scheduler) as if it were the fleet's."""
        if answer is None or not answer.request_id:
            return []
        key = self.keys.request(answer.request_id)
        sealed = self._signer.seal(answer.response.SerializeToString(),
                                   value_context(self.keys.relative(key)))
        return [Put(key, sealed, answer.lease)]

    def answer_of(self, request_id: str) -> pb.GenericResponse | None:
        """The answer given to an admin request, kept a while (redeliveries, replays); None
        when there is none, or one that fails verification (it is then answered afresh)."""
        if not request_id:
            return None
        key = self.keys.request(request_id)
        raw = self.kv.get(key)
        if raw is None:
            return None
        try:
            payload = self._signer.open(raw, value_context(self.keys.relative(key)))
            return pb.GenericResponse.FromString(payload)
        except (SignatureError, DecodeError):
            log.warning("refusing an unverifiable admin answer under %s", key)
            return None

    # -- pins ------------------------------------------------------------------------------

    def claim_pin(self, worker_id: str, dag_name: str, function_name: str) -> bool:
        """Records a pin unless the worker holds one or the function is placed already (two
        schedulers never share a worker, nor pin a function twice)."""
        key = self.keys.pin(worker_id)
        placement = self.keys.placement(dag_name, function_name)
        record = pb.PinRecord(dag_name=dag_name, function_name=function_name, worker_id=worker_id)
        ok, _ = self.kv.txn(
            [VersionIs(key, 0), VersionIs(placement, 0)],
            [Put(key, record.SerializeToString()), Put(placement, worker_id.encode())],
        )
        return ok

    def release_pin(self, record: pb.PinRecord) -> bool:
        """Deletes a pin only if it is still the one given (a re-pin is never undone), and its
        placement if that still names this worker."""
        key = self.keys.pin(record.worker_id)
        placement = self.keys.placement(record.dag_name, record.function_name)
        raw = record.SerializeToString()
        ok, _ = self.kv.txn([ValueIs(key, raw), ValueIs(placement, record.worker_id.encode())],
                            [Delete(key), Delete(placement)])
        if not ok:
            ok, _ = self.kv.txn([ValueIs(key, raw)], [Delete(key)])
        return ok

    def pins(self) -> list[pb.PinRecord]:
        items, _ = self.kv.get_prefix(self.keys.pins)
        return readable(items, parse_pin)

    def pin_of(self, worker_id: str) -> pb.PinRecord | None:
        raw = self.kv.get(self.keys.pin(worker_id))
        return None if raw is None else parse_pin(raw)

    # -- membership ------------------------------------------------------------------------

    def workers(self) -> list[pb.WorkerStatus]:
        items, _ = self.kv.get_prefix(self.keys.workers)
        return readable(items, parse_worker)

    def schedulers(self) -> list[pb.SchedulerStatus]:
        items, _ = self.kv.get_prefix(self.keys.schedulers)
        return readable(items, pb.SchedulerStatus.FromString)

    def dag_records(self) -> list[pb.DagRecord]:
        """Every DAG record, ready or being created (for views of the fleet)."""
        items, _ = self.kv.get_prefix(self.keys.dags)
        return readable(items, parse_dag_record)


def readable(items: Mapping[str, bytes], parse: Callable[[bytes], T]) -> list[T]:
    """The records of a listing that parse. One that does not (bytes written to etcd by hand
    or by something else) is logged and passed over: it used to stop every reader of the
    whole listing, so one bad key froze the dashboard and crashed `droplet status`."""
    out: list[T] = []
    for key, raw in items.items():
        try:
            out.append(parse(raw))
        except DecodeError as exc:
            log.warning("etcd key %s holds no readable record (%s): passed over", key, exc)
    return out


def parse_dag_record(raw: bytes) -> pb.DagRecord:
    record = pb.DagRecord()
    record.ParseFromString(raw)
    return record


def parse_pin(raw: bytes) -> pb.PinRecord:
    record = pb.PinRecord()
    record.ParseFromString(raw)
    return record


def parse_worker(raw: bytes) -> pb.WorkerStatus:
    status = pb.WorkerStatus()
    status.ParseFromString(raw)
    return status
