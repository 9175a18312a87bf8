"""User values and call results in etcd, including values larger than one etcd request.

A value at most `chunk_bytes` long is stored inline under its key. A larger one is split into
chunks under a fresh blob id, and only then is the key pointed at the blob with a small
manifest, so a reader sees the old value or the new one, never a mix. Replaced blobs are
deleted after the switch. Results are written once per call id (a done-marker in the same
transaction), so a re-run after a redelivery never replaces an outcome already stored.
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
from droplet.store.kv import KV, Delete, Put, VersionIs

_CHUNK_READ_BATCH = 16
_MAX_TXN_OPS = 120  # etcd's default --max-txn-ops is 128


@dataclass(frozen=True)
class ResultWrite:
    key: str
    value: pb.Value
    call_id: str
    expires: bool  # generated response keys expire after result_ttl_s; output keys do not


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

    def encode(self, value: pb.Value) -> tuple[bytes, list[Put]]:
        """The head bytes for a value and the chunk writes that must land before it."""
        raw = value.SerializeToString()
        if len(value.body) > self._max_bytes:
            raise ValueTooLargeError(
                f"value of {len(value.body)} bytes exceeds the limit of {self._max_bytes} bytes"
                " (settings.max_value_bytes)"
            )
        if len(raw) <= self._chunk_bytes:
            return raw, []
        blob_id = uuid.uuid4().hex
        body = value.body
        step = self._chunk_bytes
        chunks = [
            Put(self.keys.chunk(blob_id, i // step), body[i : i + step])
            for i in range(0, len(body), step)
        ]
        manifest = pb.ChunkManifest(
            blob_id=blob_id, chunk_count=len(chunks), size_bytes=len(body), inner_type=value.type
        )
        head = pb.Value(type=pb.CHUNKED, body=manifest.SerializeToString())
        return head.SerializeToString(), chunks

    def put(self, key: str, obj: Any, lease: int | None = None) -> None:
        self.put_values({key: serializer.dump(obj)}, lease)

    def put_values(self, values: Mapping[str, pb.Value], lease: int | None = None) -> int:
        """Writes several values atomically (their heads in one transaction)."""
        heads: list[Put] = []
        for key, value in values.items():
            head, chunks = self.encode(value)
            for chunk in chunks:
                self.kv.put(chunk.key, chunk.value)
            heads.append(Put(self.keys.value(key), head, lease))
        old_blobs = self._blobs_of([self.keys.value(k) for k in values])
        _, revision = self.kv.txn([], heads)
        self._drop_blobs(old_blobs)
        return revision

    def delete(self, key: str) -> None:
        old_blobs = self._blobs_of([self.keys.value(key)])
        self.kv.delete(self.keys.value(key))
        self._drop_blobs(old_blobs)

    def write_results(self, results: Sequence[ResultWrite]) -> None:
        """Stores each result unless its call already has one (idempotent under re-runs)."""
        prepared = []
        for result in results:
            head, chunks = self.encode(result.value)
            for chunk in chunks:
                self.kv.put(chunk.key, chunk.value)
            lease = self.expiry.current() if result.expires else None
            prepared.append((result, head, lease))
        for start in range(0, len(prepared), _MAX_TXN_OPS // 2):
            batch = prepared[start : start + _MAX_TXN_OPS // 2]
            if not self._write_batch(batch):
                for one in batch:  # some call was already stored: settle them one by one
                    self._write_batch([one])

    def _write_batch(self, batch: list[tuple[ResultWrite, bytes, int | None]]) -> bool:
        done_lease = self.expiry.current()
        compares = [VersionIs(self.keys.call_done(r.call_id), 0) for r, _, _ in batch]
        ops: list[Put | Delete] = []
        for result, head, lease in batch:
            ops.append(Put(self.keys.value(result.key), head, lease))
            ops.append(Put(self.keys.call_done(result.call_id), b"", done_lease))
        ok, _ = self.kv.txn(compares, ops)
        return ok

    # -- reading ---------------------------------------------------------------------------

    def get_value(self, key: str, revision: int = 0) -> pb.Value | None:
        return self.get_values([key], revision).get(key)

    def get_values(self, keys: Sequence[str], revision: int = 0) -> dict[str, pb.Value]:
        """One consistent read of several keys; missing keys are absent from the result."""
        full = [self.keys.value(k) for k in keys]
        entries = self.kv.get_entries(full, revision)
        out: dict[str, pb.Value] = {}
        for key, full_key in zip(keys, full, strict=True):
            entry = entries.get(full_key)
            if entry is not None:
                out[key] = self._resolve(key, serializer.from_bytes(entry.value))
        return out

    def get(self, key: str) -> Any:
        value = self.get_value(key)
        return None if value is None else serializer.load(value)

    def _resolve(self, key: str, head: pb.Value) -> pb.Value:
        if head.type != pb.CHUNKED:
            return head
        manifest = pb.ChunkManifest()
        manifest.ParseFromString(head.body)
        names = [self.keys.chunk(manifest.blob_id, i) for i in range(manifest.chunk_count)]
        parts: list[bytes] = []
        for start in range(0, len(names), _CHUNK_READ_BATCH):
            batch = names[start : start + _CHUNK_READ_BATCH]
            found = self.kv.get_entries(batch)
            for name in batch:
                if name not in found:
                    raise StoreError(f"value {key!r} was replaced while being read; read again")
                parts.append(found[name].value)
        body = b"".join(parts)
        if len(body) != manifest.size_bytes:
            raise StoreError(f"value {key!r} is damaged: {len(body)} of {manifest.size_bytes}")
        return pb.Value(type=manifest.inner_type, body=body)

    def _blobs_of(self, full_keys: Iterable[str]) -> list[str]:
        blobs = []
        for entry in self.kv.get_entries(list(full_keys)).values():
            head = serializer.from_bytes(entry.value)
            if head.type == pb.CHUNKED:
                manifest = pb.ChunkManifest()
                manifest.ParseFromString(head.body)
                blobs.append(manifest.blob_id)
        return blobs

    def _drop_blobs(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            self.kv.delete(self.keys.blob(blob_id), prefix=True)
