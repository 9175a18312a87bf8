"""The key-value interface the rest of Droplet sees: etcd's model, minus gRPC.

`EtcdKV` (store/etcd*.py, the only modules that import etcd3) and `MemoryKV` (store/memory.py,
for narrow unit tests) implement it. Keys are str, values bytes; revisions are etcd's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True)
class VersionIs:
    """Compares a key's version: 0 means the key does not exist."""

    key: str
    version: int


@dataclass(frozen=True)
class ValueIs:
    key: str
    value: bytes


@dataclass(frozen=True)
class ModRevisionBelow:
    """True when the key was last written before `revision` (or does not exist)."""

    key: str
    revision: int


@dataclass(frozen=True)
class ModRevisionIs:
    """True when the key was last written at exactly `revision` (0: it does not exist), that
    is, nobody wrote or deleted it since it was read at that revision."""

    key: str
    revision: int


Compare = VersionIs | ValueIs | ModRevisionBelow | ModRevisionIs

# etcd refuses a transaction with more compares, or more operations in a branch, than its
# --max-txn-ops (128 by default); MemoryKV refuses the same.
MAX_TXN_OPS = 128
Op = Put | Delete


@dataclass(frozen=True)
class WatchEvent:
    key: str
    value: bytes | None  # None: deleted (or expired with its lease)
    revision: int
    prev_value: bytes | None = None
    create_revision: int = 0
    version: int = 0


@dataclass(frozen=True)
class Entry:
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0


class Lease(Protocol):
    @property
    def id(self) -> int: ...

    def refresh(self) -> None: ...

    def revoke(self) -> None: ...


WatchCallback = Callable[[list[WatchEvent]], None]
ErrorCallback = Callable[[Exception], None]


class KV(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def get_entries(self, keys: Sequence[str], revision: int = 0) -> dict[str, Entry]:
        """One consistent read of several keys (at `revision` when non-zero)."""
        ...

    def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Every key under prefix, and the store revision the read saw."""
        ...

    def count_prefix(self, prefix: str) -> int:
        """How many keys live under prefix (without reading them)."""
        ...

    def put(self, key: str, value: bytes, lease: int | None = None) -> int: ...

    def delete(self, key: str, prefix: bool = False) -> int: ...

    def txn(
        self, compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op] = ()
    ) -> tuple[bool, int]:
        """Applies success ops when every compare holds, else failure ops; returns
        (succeeded, revision after). A key may appear in one op only."""
        ...

    def txn_previous(
        self, compares: Iterable[Compare], success: Iterable[Op],
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[bool, int, dict[str, bytes]]:
        """Like txn, and also returns the values the success ops overwrote or deleted.
        `meanwhile` (it must not raise) may run while etcd works on the request, once it is
        sent, so that the caller's next work overlaps etcd's; it may also not run at all."""
        ...

    def revision(self) -> int: ...

    def grant_lease(self, ttl_s: int) -> Lease: ...

    def watch_prefix(
        self,
        prefix: str,
        on_events: WatchCallback,
        on_error: ErrorCallback,
        start_revision: int = 0,
    ) -> Callable[[], None]:
        """Calls on_events from a background thread; returns a function that cancels."""
        ...

    def close(self) -> None: ...
