"""User values and call outcomes in etcd, as clients and functions read and write them.

Values written by users (and DAG results under a caller's `output_key`) live under `values/`;
each call's outcome lives under `results/<call id>` (see commits.py, which writes them once).
A read by key looks in `values/` first, then `results/`, so the key `exec_func` returned reads
back its call's outcome. Layout, chunking and signatures of each value: blobs.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from droplet.errors import SignatureError, StoreError
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.blobs import BlobLayout, Damaged, Prepared, Replaced
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Compare, Delete, Put
from droplet.store.leases import LeasePool


@dataclass(frozen=True)
class Stored:
    value: pb.Value
    mod_revision: int
    user_value: bool  # under values/ (False: a call's outcome under results/)


class ValueStore:
    def __init__(self, kv: KV, settings: Settings, signer: Signer | None = None) -> None:
        self.kv = kv
        self.settings = settings
        self.keys = StoreKeys(settings.etcd_prefix)
        self.signer = signer or Signer(settings.signing_key)
        self.blobs = BlobLayout(kv, self.keys, self.signer, settings.max_value_bytes,
                                settings.chunk_bytes)
        self.leases = LeasePool(kv)

    # -- writing ---------------------------------------------------------------------------

    def put(self, key: str, obj: Any) -> int:
        return self.put_values({key: serializer.dump(obj)})

    def put_values(self, values: Mapping[str, pb.Value], deletes: Iterable[str] = ()) -> int:
        """Writes (and deletes) several values atomically: one transaction switches all.
        Returns the store revision of the write."""
        prepared = [self.blobs.prepare(self.keys.value(k), v, None) for k, v in values.items()]
        self.blobs.write_chunks(prepared)
        compares: list[Compare] = []
        ops: list[Put | Delete] = []
        for item in prepared:
            guard, link = item.link(None)
            compares += guard
            ops += link
        gone = [k for k in deletes if k not in values]
        ops += [Delete(self.keys.value(k)) for k in gone]
        ops += [Delete(self.keys.result(k)) for k in gone]
        return self.switch(prepared, compares, ops)

    def switch(self, prepared: list[Prepared], compares: list[Compare],
               ops: list[Put | Delete]) -> int:
        """Runs the transaction that links prepared heads; drops the blobs it replaced, or on
        failure the blobs it would have linked."""
        try:
            ok, revision, previous = self.kv.txn_previous(compares, ops)
        except StoreError:
            if self.blobs.drop_unless_landed(prepared):
                return self.kv.revision()
            raise
        if not ok:
            if self.blobs.drop_unless_landed(prepared):
                return revision  # a retried transaction that had been applied already
            raise StoreError("a value was swept while being written; write it again")
        self.blobs.drop(self.blobs.blob_ids(previous))
        return revision

    def delete(self, key: str) -> int:
        ops = [Delete(self.keys.value(key)), Delete(self.keys.result(key))]
        _, revision, previous = self.kv.txn_previous([], ops)
        self.blobs.drop(self.blobs.blob_ids(previous))
        return revision

    # -- reading ---------------------------------------------------------------------------

    def get_value(self, key: str, revision: int = 0) -> pb.Value | None:
        return self.get_values([key], revision).get(key)

    def get_values(self, keys: Sequence[str], revision: int = 0) -> dict[str, pb.Value]:
        """One consistent read of several keys; missing keys are absent from the result."""
        return {k: stored.value for k, stored in self.read(keys, revision).items()}

    def get(self, key: str) -> Any:
        value = self.get_value(key)
        return None if value is None else serializer.load(value)

    def read(self, keys: Sequence[str], revision: int = 0,
             seen: dict[str, int] | None = None) -> dict[str, Stored]:
        """Like get_values, with each value's revision and where it lives. `seen`, when
        given, receives the mod revision (0: absent) of every store key the read depended on:
        the read set a MULTI commit checks."""
        for attempt in range(3):
            full = [self.keys.value(k) for k in keys] + [self.keys.result(k) for k in keys]
            entries = self.kv.get_entries(full, revision)
            out: dict[str, Stored] = {}
            try:
                for key in keys:
                    user_key = self.keys.value(key)
                    user = entries.get(user_key)
                    if seen is not None:
                        seen[self.keys.relative(user_key)] = user.mod_revision if user else 0
                    if user is not None:
                        out[key] = self._stored(user_key, user.value, user.mod_revision,
                                                True, revision)
                        continue
                    result_key = self.keys.result(key)
                    result = entries.get(result_key)
                    if seen is not None:
                        seen[self.keys.relative(result_key)] = result.mod_revision if result else 0
                    if result is not None:
                        out[key] = self._stored(result_key, result.value, result.mod_revision,
                                                False, revision)
                return out
            except Replaced:
                if revision or attempt == 2:
                    raise StoreError(f"{list(keys)} replaced while being read, again") from None
        return {}

    def _stored(self, full_key: str, raw: bytes, mod_revision: int, user: bool,
                revision: int) -> Stored:
        head = self.blobs.open_head(full_key, raw)
        return Stored(self.blobs.resolve(full_key, head, revision), mod_revision, user)

    def outcome(self, call_id: str) -> pb.Value | None:
        """The stored outcome of one call (results/<call id>), or None. One that does not
        verify (a cancel stored by a client with another signing_key, a planted record) is
        that call's outcome all the same, write-once: it reads as an UNAUTHORIZED error, so
        that the worker that finds it answers it (and acks) and every reader sees the same."""
        full_key = self.keys.result(call_id)
        heads: set[bytes] = set()
        for _ in range(3):
            raw = self.kv.get(full_key)
            if raw is None:
                return None
            heads.add(raw)
            try:
                return self.blobs.resolve(full_key, self.blobs.open_head(full_key, raw), 0)
            except Replaced:
                continue
            except (SignatureError, Damaged) as e:
                return error_value(
                    pb.UNAUTHORIZED, f"the stored outcome of call {call_id} does not verify "
                    f"({e}): stored by a client with another signing_key?")
        if len(heads) == 1:  # the same head each time, its chunks gone: it never will be whole
            # (chunks are written before their head and go with it: someone took them)
            return error_value(
                pb.UNAUTHORIZED, f"the stored outcome of call {call_id} does not verify (its "
                "chunks are gone while its head stays)")
        raise StoreError(f"the outcome of {call_id} cannot be read whole")
