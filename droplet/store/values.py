"""User values and call results in etcd, including values larger than one etcd request.

A value of at most `INLINE_MAX_BYTES` is stored inline under its key. A larger one is split
into `chunk_bytes` chunks under a fresh blob id, and only then is the key pointed at the blob
with a small manifest, so a reader sees the old value or the new one, never a mix; the blob a
write replaced is deleted after the switch. Keeping heads small also keeps any number of them
inside one etcd transaction.

Values written by users (and results under a caller's `output_key`) live under `values/`;
results under generated response keys live under `results/` and expire after
`result_ttl_s`. Reads look in both. Results are written once per call id (a done-marker in
the same transaction), so a re-run after a redelivery never replaces an outcome.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from droplet.errors import StoreError, ValueTooLargeError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Compare, Delete, Put, VersionIs

INLINE_MAX_BYTES = 64 * 1024
_TXN_MAX_BYTES = 1024 * 1024  # etcd refuses requests over 1.5 MiB by default
_TXN_MAX_OPS = 120  # and transactions over 128 operations
_CHUNK_READ_BATCH = 16


class _Replaced(Exception):
    """A chunk vanished while reading: the value was replaced meanwhile; read it again."""


@dataclass(frozen=True)
class Stored:
    value: pb.Value
    mod_revision: int
    user_value: bool  # under values/ (False: a result under a generated key)


@dataclass(frozen=True)
class ResultWrite:
    key: str
    value: pb.Value
    call_id: str
    expires: bool  # generated response keys expire after result_ttl_s; output keys do not


@dataclass
class _Prepared:
    key: str  # full etcd key of the head
    head: bytes
    chunks: list[Put]
    blob_id: str | None


class ExpiryLeases:
    """Hands out a shared lease so that results expire between 0.9 and 1.0 x ttl_s."""

    def __init__(self, kv: KV, ttl_s: int) -> None:
        self._kv = kv
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._lease_id: int | None = None
        self._granted_at = 0.0

    def current(self) -> int | None:
        if self._ttl_s <= 0:
            return None
        with self._lock:
            now = time.monotonic()
            if self._lease_id is None or now - self._granted_at > self._ttl_s / 10:
                self._lease_id = self._kv.grant_lease(self._ttl_s).id
                self._granted_at = now
            return self._lease_id


class ValueStore:
    def __init__(self, kv: KV, settings: Settings) -> None:
        self.kv = kv
        self.keys = StoreKeys(settings.etcd_prefix)
        self._max_bytes = settings.max_value_bytes
        self._chunk_bytes = settings.chunk_bytes
        self.expiry = ExpiryLeases(kv, settings.result_ttl_s)

    # -- writing ---------------------------------------------------------------------------

    def _prepare(self, full_key: str, value: pb.Value, lease: int | None) -> _Prepared:
        if len(value.body) > self._max_bytes:
            raise ValueTooLargeError(
                f"value of {len(value.body)} bytes exceeds the limit of {self._max_bytes} bytes"
                " (settings.max_value_bytes)"
            )
        raw = value.SerializeToString()
        if len(raw) <= min(INLINE_MAX_BYTES, self._chunk_bytes):
            return _Prepared(full_key, raw, [], None)
        blob_id = uuid.uuid4().hex
        body, step = value.body, self._chunk_bytes
        chunks = [
            Put(self.keys.chunk(blob_id, i // step), body[i : i + step], lease)
            for i in range(0, len(body), step)
        ]
        manifest = pb.ChunkManifest(
            blob_id=blob_id, chunk_count=len(chunks), size_bytes=len(body), inner_type=value.type
        )
        head = pb.Value(type=pb.CHUNKED, body=manifest.SerializeToString())
        return _Prepared(full_key, head.SerializeToString(), chunks, blob_id)

    def _write_chunks(self, prepared: Iterable[_Prepared]) -> None:
        for item in prepared:
            for chunk in item.chunks:
                self.kv.put(chunk.key, chunk.value, chunk.lease)

    def put(self, key: str, obj: Any, lease: int | None = None) -> None:
        self.put_values({key: serializer.dump(obj)}, lease)

    def put_values(
        self, values: Mapping[str, pb.Value], lease: int | None = None,
        deletes: Iterable[str] = (),
    ) -> int:
        """Writes (and deletes) several values atomically: one transaction switches all."""
        prepared = [self._prepare(self.keys.value(k), v, lease) for k, v in values.items()]
        self._write_chunks(prepared)
        ops: list[Put | Delete] = [Put(p.key, p.head, lease) for p in prepared]
        # A new value under values/ hides any expiring result of the same name.
        ops += [Delete(self.keys.result(k)) for k in values]
        gone = [k for k in deletes if k not in values]
        ops += [Delete(self.keys.value(k)) for k in gone] + [Delete(self.keys.result(k))
                                                             for k in gone]
        try:
            _, revision, previous = self.kv.txn_previous([], ops)
        except StoreError:
            self._drop_blobs(p.blob_id for p in prepared)
            raise
        self._drop_blobs(_blob_ids(previous.values()))
        return revision

    def delete(self, key: str) -> None:
        ops = [Delete(self.keys.value(key)), Delete(self.keys.result(key))]
        _, _, previous = self.kv.txn_previous([], ops)
        self._drop_blobs(_blob_ids(previous.values()))

    def write_results(self, results: Sequence[ResultWrite]) -> None:
        """Stores each result unless its call already has one (idempotent under re-runs)."""
        for batch in self._batches(results):
            prepared = [self._prepare_result(r) for r in batch]
            self._write_chunks(prepared)
            if not self._write_batch(batch, prepared):
                for one, item in zip(batch, prepared, strict=True):
                    if not self._write_batch([one], [item]):
                        self._drop_blobs([item.blob_id])  # the call already had an outcome

    def _prepare_result(self, result: ResultWrite) -> _Prepared:
        if result.expires:
            return self._prepare(self.keys.result(result.key), result.value,
                                 self.expiry.current())
        return self._prepare(self.keys.value(result.key), result.value, None)

    def _batches(self, results: Sequence[ResultWrite]) -> Iterable[list[ResultWrite]]:
        """Splits results so that no batch names a key or a call twice or grows too big."""
        batch: list[ResultWrite] = []
        names: set[str] = set()
        size = 0
        for result in results:
            cost = min(len(result.value.body), INLINE_MAX_BYTES) + 256
            clash = result.key in names or result.call_id in names
            if batch and (clash or size + cost > _TXN_MAX_BYTES or len(batch) * 2 >= _TXN_MAX_OPS):
                yield batch
                batch, names, size = [], set(), 0
            batch.append(result)
            names.update((result.key, result.call_id))
            size += cost
        if batch:
            yield batch

    def _write_batch(self, batch: list[ResultWrite], prepared: list[_Prepared]) -> bool:
        """One transaction for a batch. A result under a generated key (unique to its call) is
        its own write-once marker; one under a caller's output key, which later calls reuse,
        gets a done-marker for its call id."""
        lease = self.expiry.current()
        compares: list[Compare] = []
        ops: list[Put | Delete] = []
        for result, item in zip(batch, prepared, strict=True):
            if result.expires and result.key == result.call_id:
                compares.append(VersionIs(item.key, 0))
                ops.append(Put(item.key, item.head, lease))
            else:
                marker = self.keys.call_done(result.call_id)
                compares.append(VersionIs(marker, 0))
                ops.append(Put(item.key, item.head, lease if result.expires else None))
                ops.append(Put(marker, b"", lease))
        if all(r.expires for r in batch):
            ok, _ = self.kv.txn(compares, ops)  # fresh keys: nothing to replace
            return ok
        ok, _, previous = self.kv.txn_previous(compares, ops)
        if ok:
            self._drop_blobs(_blob_ids(previous.values()))
        return ok

    # -- reading ---------------------------------------------------------------------------

    def get_value(self, key: str, revision: int = 0) -> pb.Value | None:
        return self.get_values([key], revision).get(key)

    def get_values(self, keys: Sequence[str], revision: int = 0) -> dict[str, pb.Value]:
        """One consistent read of several keys; missing keys are absent from the result."""
        return {k: stored.value for k, stored in self.read(keys, revision).items()}

    def read(self, keys: Sequence[str], revision: int = 0) -> dict[str, Stored]:
        """Like get_values, with each value's revision and where it lives."""
        for attempt in range(3):
            full = [self.keys.value(k) for k in keys] + [self.keys.result(k) for k in keys]
            entries = self.kv.get_entries(full, revision)
            out: dict[str, Stored] = {}
            try:
                for key in keys:
                    user = entries.get(self.keys.value(key))
                    entry = user or entries.get(self.keys.result(key))
                    if entry is not None:
                        value = self._resolve(key, serializer.from_bytes(entry.value), revision)
                        out[key] = Stored(value, entry.mod_revision, user is not None)
                return out
            except _Replaced:
                if revision or attempt == 2:
                    raise StoreError(f"{list(keys)} replaced while being read, again") from None
        return {}

    def get(self, key: str) -> Any:
        value = self.get_value(key)
        return None if value is None else serializer.load(value)

    def _resolve(self, key: str, head: pb.Value, revision: int) -> pb.Value:
        """The value a head stands for; a snapshot read (revision) reads its chunks at that
        revision too. A blob deleted under a current read means the value was replaced."""
        if head.type != pb.CHUNKED:
            return head
        manifest = pb.ChunkManifest()
        manifest.ParseFromString(head.body)
        names = [self.keys.chunk(manifest.blob_id, i) for i in range(manifest.chunk_count)]
        parts: list[bytes] = []
        for start in range(0, len(names), _CHUNK_READ_BATCH):
            batch = names[start : start + _CHUNK_READ_BATCH]
            found = self.kv.get_entries(batch, revision)
            for name in batch:
                if name not in found:
                    raise _Replaced(key)
                parts.append(found[name].value)
        body = b"".join(parts)
        if len(body) != manifest.size_bytes:
            raise StoreError(f"value {key!r} is damaged: {len(body)} of {manifest.size_bytes}")
        return pb.Value(type=manifest.inner_type, body=body)

    def _drop_blobs(self, blob_ids: Iterable[str | None]) -> None:
        for blob_id in blob_ids:
            if blob_id:
                self.kv.delete(self.keys.blob(blob_id), prefix=True)


def _blob_ids(heads: Iterable[bytes]) -> list[str]:
    """Blob ids of the chunked values among some stored heads."""
    ids = []
    for raw in heads:
        try:
            head = serializer.from_bytes(raw)
        except Exception:
            continue  # a done-marker or another non-value key
        if head.type == pb.CHUNKED:
            manifest = pb.ChunkManifest()
            manifest.ParseFromString(head.body)
            ids.append(manifest.blob_id)
    return ids
