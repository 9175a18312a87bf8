"""How one value is laid out in etcd: a small head under its key, and chunks when it is large.

A value of at most `INLINE_MAX_BYTES` is its own head. A larger one is split into chunks under
a fresh blob id and the head is a manifest naming them, with the SHA-256 of the whole body; the
head is switched in one transaction, so a reader sees the old value or the new one, never a
mix, and any number of heads fit in one transaction.

Heads are sealed (signing.py) with the key they are stored under: with a fleet secret, a head
copied to another key, or written by someone without the secret, fails verification before a
byte of it is unpickled; chunks are checked against the signed digest.

Chunks written for a head without a lease are announced first under `pending/<blob>`, and the
transaction that links the head deletes that marker. A writer that dies in between leaves a
pending marker, which `sweep_pending` turns into a deletion of the orphaned chunks.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from droplet.errors import SignatureError, StoreError, ValueTooLargeError
from droplet.proto import pb
from droplet.signing import Signer, value_context
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV, Compare, Delete, Put, ValueIs

INLINE_MAX_BYTES = 64 * 1024
_CHUNK_READ_BATCH = 16


class Replaced(Exception):
    """A chunk vanished while reading: the value was replaced meanwhile; read it again."""


class Damaged(StoreError):
    """A head whose chunks do not match its (signed) digest: no read will ever do better."""


@dataclass
class Prepared:
    key: str  # full etcd key of the head
    head: bytes  # sealed
    chunks: list[Put]
    blob_id: str | None = None
    pending: Put | None = None  # the pending marker of chunks that no lease will clean up

    def link(self, lease: int | None) -> tuple[list[Compare], list[Put | Delete]]:
        """The compares and operations that make this head current."""
        ops: list[Put | Delete] = [Put(self.key, self.head, lease)]
        if self.pending is None:
            return [], ops
        return [ValueIs(self.pending.key, self.pending.value)], [*ops, Delete(self.pending.key)]


class BlobLayout:
    def __init__(self, kv: KV, keys: StoreKeys, signer: Signer, max_bytes: int,
                 chunk_bytes: int) -> None:
        self._kv = kv
        self._keys = keys
        self._signer = signer
        self._max_bytes = max_bytes
        self._chunk_bytes = chunk_bytes

    # -- writing ---------------------------------------------------------------------------

    def prepare(self, full_key: str, value: pb.Value, lease: int | None) -> Prepared:
        if len(value.body) > self._max_bytes:
            raise ValueTooLargeError(
                f"value of {len(value.body)} bytes exceeds the limit of {self._max_bytes} bytes"
                " (settings.max_value_bytes)"
            )
        raw = value.SerializeToString()
        if len(raw) <= min(INLINE_MAX_BYTES, self._chunk_bytes):
            return Prepared(full_key, self.seal(full_key, raw), [])
        blob_id = uuid.uuid4().hex
        body, step = value.body, self._chunk_bytes
        chunks = [
            Put(self._keys.chunk(blob_id, i // step), body[i : i + step], lease)
            for i in range(0, len(body), step)
        ]
        manifest = pb.ChunkManifest(
            blob_id=blob_id, chunk_count=len(chunks), size_bytes=len(body),
            inner_type=value.type, sha256=hashlib.sha256(body).digest(),
        )
        head = pb.Value(type=pb.CHUNKED, body=manifest.SerializeToString())
        pending = None
        if lease is None:
            pending = Put(self._keys.pending_blob(blob_id), repr(time.time()).encode())
        return Prepared(full_key, self.seal(full_key, head.SerializeToString()), chunks, blob_id,
                        pending)

    def write_chunks(self, prepared: Iterable[Prepared]) -> None:
        for item in prepared:
            if item.pending is not None:
                self._kv.put(item.pending.key, item.pending.value)
            for chunk in item.chunks:
                self._kv.put(chunk.key, chunk.value, chunk.lease)

    def seal(self, full_key: str, raw: bytes) -> bytes:
        if not self._signer.enabled:
            return raw
        return self._signer.seal(raw, value_context(self._keys.relative(full_key)))

    # -- reading ---------------------------------------------------------------------------

    def open_head(self, full_key: str, stored: bytes) -> pb.Value:
        """The head stored under full_key, verified (with a fleet secret) before use."""
        if self._signer.enabled or Signer.is_framed(stored):
            stored = self._signer.open(stored, value_context(self._keys.relative(full_key)))
        head = pb.Value()
        try:
            head.ParseFromString(stored)
        except DecodeError:
            where = self._keys.relative(full_key)
            raise SignatureError(f"{where} does not hold a Droplet value") from None
        return head

    def resolve(self, full_key: str, head: pb.Value, revision: int) -> pb.Value:
        """The value a head stands for; a snapshot read (revision) reads its chunks at that
        revision too. A blob deleted under a current read means the value was replaced."""
        if head.type != pb.CHUNKED:
            return head
        manifest = pb.ChunkManifest()
        manifest.ParseFromString(head.body)
        names = [self._keys.chunk(manifest.blob_id, i) for i in range(manifest.chunk_count)]
        parts: list[bytes] = []
        for start in range(0, len(names), _CHUNK_READ_BATCH):
            batch = names[start : start + _CHUNK_READ_BATCH]
            found = self._kv.get_entries(batch, revision)
            for name in batch:
                if name not in found:
                    raise Replaced(full_key)
                parts.append(found[name].value)
        body = b"".join(parts)
        if len(body) != manifest.size_bytes or (
            manifest.sha256 and hashlib.sha256(body).digest() != manifest.sha256
        ):
            raise Damaged(f"value {self._keys.relative(full_key)!r} is damaged")
        return pb.Value(type=manifest.inner_type, body=body)

    # -- cleaning up -----------------------------------------------------------------------

    def blob_ids(self, heads: dict[str, bytes]) -> list[str]:
        """Blob ids of the chunked values among some stored heads (full key -> bytes)."""
        ids = []
        for full_key, raw in heads.items():
            try:
                head = self.open_head(full_key, raw)
            except Exception:
                continue  # a marker or another non-value key
            if head.type == pb.CHUNKED:
                manifest = pb.ChunkManifest()
                manifest.ParseFromString(head.body)
                ids.append(manifest.blob_id)
        return ids

    def landed(self, prepared: Iterable[Prepared]) -> bool:
        """Whether a transaction that seemed to fail linked these heads after all (etcd
        applied it but its answer was lost, and a retry then failed its compares)."""
        for item in prepared:
            if item.blob_id is not None and self._kv.get(item.key) == item.head:
                return True
        return False

    def drop_unless_landed(self, prepared: list[Prepared]) -> bool:
        """Drops the blobs of a failed write, unless it landed after all; True if it did."""
        if self.landed(prepared):
            return True
        self.drop(p.blob_id for p in prepared)
        return False

    def drop(self, blob_ids: Iterable[str | None]) -> None:
        for blob_id in blob_ids:
            if blob_id:
                self._kv.delete(self._keys.blob(blob_id), prefix=True)
                self._kv.delete(self._keys.pending_blob(blob_id))

    def sweep_pending(self, older_than_s: float) -> int:
        """Deletes the chunks of blobs announced longer ago than older_than_s and never
        linked (their writer died); returns how many."""
        items, _ = self._kv.get_prefix(self._keys.pending)
        swept = 0
        for key, stamp in items.items():
            try:
                age = time.time() - float(stamp.decode())
            except ValueError:
                age = older_than_s + 1
            if age <= older_than_s:
                continue
            blob_id = StoreKeys.tail(key, self._keys.pending)
            ok, _ = self._kv.txn([ValueIs(key, stamp)],
                                 [Delete(key), Delete(self._keys.blob(blob_id), prefix=True)])
            swept += ok
        return swept
