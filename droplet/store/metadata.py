"""Cluster metadata in etcd: functions, DAGs, pins, and fleet membership records.

Function bodies are stored signed (see signing.py), so a worker refuses a body that did not
come through a holder of the fleet secret even if someone could write to etcd directly. Writes
that two schedulers could race on (DAG names, pins) are etcd transactions on the key's version.
"""

from __future__ import annotations

from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Delete, Put, ValueIs, VersionIs


class Metadata:
    def __init__(self, kv: KV, settings: Settings, signer: Signer) -> None:
        self.kv = kv
        self.keys = StoreKeys(settings.etcd_prefix)
        self._signer = signer

    # -- functions -------------------------------------------------------------------------

    def put_function(self, function: pb.Function) -> None:
        self.kv.put(self.keys.function(function.name), self.seal_function(function))

    def seal_function(self, function: pb.Function) -> bytes:
        return self._signer.seal(function.SerializeToString())

    def open_function(self, raw: bytes) -> pb.Function:
        """Parses a stored function; raises SignatureError when its signature is wrong."""
        function = pb.Function()
        function.ParseFromString(self._signer.open(raw))
        return function

    def get_function(self, name: str) -> pb.Function | None:
        raw = self.kv.get(self.keys.function(name))
        return None if raw is None else self.open_function(raw)

    def function_names(self) -> list[str]:
        items, _ = self.kv.get_prefix(self.keys.functions)
        return sorted(StoreKeys.tail(k, self.keys.functions) for k in items)

    def delete_function(self, name: str) -> bool:
        return self.kv.delete(self.keys.function(name)) > 0

    # -- DAGs ------------------------------------------------------------------------------

    def create_dag(self, dag: pb.Dag, creator: str = "") -> bool:
        """Claims the DAG's name (not ready yet); False when the name is taken."""
        record = pb.DagRecord(dag=dag, ready=False, creator=creator).SerializeToString()
        key = self.keys.dag(dag.name)
        ok, _ = self.kv.txn([VersionIs(key, 0)], [Put(key, record)])
        return ok

    def mark_dag_ready(self, dag: pb.Dag) -> None:
        self.kv.put(self.keys.dag(dag.name), pb.DagRecord(dag=dag, ready=True).SerializeToString())

    def get_dag(self, name: str) -> pb.DagRecord | None:
        raw = self.kv.get(self.keys.dag(name))
        return None if raw is None else parse_dag_record(raw)

    def delete_dag(self, name: str) -> bool:
        return self.kv.delete(self.keys.dag(name)) > 0

    # -- pins ------------------------------------------------------------------------------

    def claim_pin(self, worker_id: str, dag_name: str, function_name: str) -> bool:
        """Records a pin unless the worker already has one (two schedulers never share one)."""
        key = self.keys.pin(worker_id)
        record = pb.PinRecord(dag_name=dag_name, function_name=function_name, worker_id=worker_id)
        ok, _ = self.kv.txn([VersionIs(key, 0)], [Put(key, record.SerializeToString())])
        return ok

    def release_pin(self, record: pb.PinRecord) -> bool:
        """Deletes a pin only if it is still the one given (a re-pin is never undone)."""
        key = self.keys.pin(record.worker_id)
        ok, _ = self.kv.txn([ValueIs(key, record.SerializeToString())], [Delete(key)])
        return ok

    def pins(self) -> list[pb.PinRecord]:
        items, _ = self.kv.get_prefix(self.keys.pins)
        return [parse_pin(raw) for raw in items.values()]

    # -- membership ------------------------------------------------------------------------

    def workers(self) -> list[pb.WorkerStatus]:
        items, _ = self.kv.get_prefix(self.keys.workers)
        return [parse_worker(raw) for raw in items.values()]

    def schedulers(self) -> list[pb.SchedulerStatus]:
        items, _ = self.kv.get_prefix(self.keys.schedulers)
        return [pb.SchedulerStatus.FromString(raw) for raw in items.values()]


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

