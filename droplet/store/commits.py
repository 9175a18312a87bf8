"""The transaction that makes a handler's work durable: a call's outcome, written once.

Every stored outcome lives under `results/<call id>`, and that key is its own write-once marker:
the transaction holds only while it does not exist, so a call that ran twice (a redelivery, a
re-send) keeps its first outcome, and the second run learns it (`DUPLICATE`, with the stored
outcome to answer with instead). In the same transaction go, when the call has them:

* the result under the caller's `output_key` (values/), so the key and the outcome agree;
* a MULTI call's buffered writes, with a compare per key it read (its mod revision must still
  be the one the snapshot saw) and per key it writes (unchanged since the snapshot): a commit
  that would overwrite a concurrent change fails instead (`CONFLICT`), and nothing is written;
* bookkeeping records of DAG joins (partials to add, partials to clear, a done marker).

etcd bounds a transaction to `max_ops` compares and operations, and a request to 1.5 MiB; a
commit that needs more is refused whole (`TOO_LARGE`) rather than split, which would break its
atomicity.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from droplet.proto import pb
from droplet.store.blobs import Prepared
from droplet.store.kv import Compare, Delete, ModRevisionBelow, ModRevisionIs, Put, VersionIs
from droplet.store.values import ValueStore


@dataclass
class Outcome:
    call_id: str
    value: pb.Value
    output_key: str = ""  # also stored under values/<output_key>
    keep: bool = False  # kept result_ttl_s (read by key later); else result_window_s
    ttl_s: float | None = None  # kept this long instead (a cancel: settings.cancel_keep_s)


@dataclass
class MultiWrites:
    writes: dict[str, pb.Value] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    reads: dict[str, int] = field(default_factory=dict)  # store key -> mod revision seen
    snapshot_revision: int = 0


@dataclass
class Commit:
    outcome: Outcome | None = None
    multi: MultiWrites | None = None
    records: dict[str, bytes] = field(default_factory=dict)  # full key -> bytes (leased)
    clears: list[str] = field(default_factory=list)  # full-key prefixes to delete
    absent: str | None = None  # a full key that must not exist (a join's done marker)
    guards: list[Compare] = field(default_factory=list)  # must hold, else CONFLICT
    records_ttl_s: float | None = None  # lease of `records`; None: schedule_ttl_s


# etcd refuses a request larger than its --max-request-bytes (1.5 MiB by default): a commit is
# kept well under it (chunks are written before, outside the transaction).
MiB = 1024 * 1024
MAX_TXN_BYTES = 1 * MiB


def _bytes(ops: list[Put | Delete]) -> int:
    total = 0  # a loop, not sum() over a generator: one Python call instead of one an op
    for op in ops:
        total += len(op.key) + (len(op.value) if isinstance(op, Put) else 0) + 16
    return total


def _overlaps(built: tuple[list[Compare], list[Put | Delete], list[Prepared]],
              keys: set[str]) -> bool:
    """Whether a commit reads or writes any of keys (its deleted prefixes cover one): then it
    must not overtake the commits that name them (apply_all keeps their order)."""
    if not keys:
        return False
    compares, ops, _ = built
    named = {c.key for c in compares} | {op.key for op in ops}
    prefixes = [op.key for op in ops if isinstance(op, Delete) and op.prefix]
    return bool(named & keys) or any(k.startswith(p) for p in prefixes for k in keys)


class Status(enum.Enum):
    DONE = "done"
    DUPLICATE = "duplicate"  # the call already had an outcome: `existing`
    CONFLICT = "conflict"  # a MULTI compare failed: something changed since the snapshot
    TAKEN = "taken"  # the `absent` key exists: someone else completed this
    TOO_LARGE = "too large"  # more than etcd allows in one transaction


@dataclass
class Committed:
    status: Status
    revision: int = 0
    existing: pb.Value | None = None
    why: str = ""  # TOO_LARGE: which of etcd's limits, and by how much


class Committer:
    def __init__(self, values: ValueStore, max_ops: int) -> None:
        self.values = values
        self._keys = values.keys
        self.max_ops = max_ops

    def apply(self, commit: Commit) -> Committed:
        built = self._build(commit)
        if isinstance(built, str):
            return Committed(Status.TOO_LARGE, why=built)
        return self._execute(commit, *built)

    def apply_all(self, commits: list[Commit],
                  meanwhile: Callable[[], None] | None = None) -> list[Committed]:
        """Applies several commits, the plain outcomes among them together in as few
        transactions as etcd allows (a burst of calls costs one write, not one each); any
        other commit, or a batch that fails (one of its calls had an outcome already), is
        applied on its own. The results are those of applying the commits one by one in
        order: a commit that names a key of the plain ones grouped before it waits for them.
        `meanwhile` may run while etcd works on the first transaction (KV.txn_previous)."""
        hook = [meanwhile]  # handed to the first transaction only

        def first() -> Callable[[], None] | None:
            taken, hook[0] = hook[0], None
            return taken

        results: list[Committed | None] = [None] * len(commits)
        group: list[int] = []
        compares: list[Compare] = []
        ops: list[Put | Delete] = []
        prepared: list[Prepared] = []
        keys: set[str] = set()  # etcd refuses a transaction naming a key twice
        guarded: set[str] = set()  # keys the group's compares read
        size = 0  # _bytes(ops), kept as ops grow (a burst's envelope has many commits)

        def flush() -> None:
            nonlocal size
            if not group:
                return
            if len(group) == 1:  # built already: run it as it is
                results[group[0]] = self._execute(commits[group[0]], list(compares), list(ops),
                                                  list(prepared), first())
            else:
                done = self._run(compares, ops, prepared, first())
                for index in group:
                    results[index] = done if done.status is Status.DONE else self.apply(
                        commits[index])
            group.clear()
            compares.clear()
            ops.clear()
            prepared.clear()
            keys.clear()
            guarded.clear()
            size = 0

        for index, commit in enumerate(commits):
            plain = (commit.outcome is not None and commit.multi is None and not commit.records
                     and not commit.clears and commit.absent is None and not commit.guards)
            built = self._build(commit)
            if isinstance(built, str):
                results[index] = Committed(Status.TOO_LARGE, why=built)
                continue
            if not plain:
                if _overlaps(built, keys | guarded):
                    flush()  # in order: an earlier outcome of the same call is written first
                results[index] = self._execute(commit, *built, first())
                continue
            named = {op.key for op in built[1]}
            added = _bytes(built[1])
            too_many = max(len(ops) + len(built[1]), len(compares) + len(built[0])) > self.max_ops
            if too_many or named & keys or size + added > MAX_TXN_BYTES:
                flush()
            keys.update(named)
            for compare in built[0]:
                guarded.add(compare.key)
            size += added
            group.append(index)
            compares.extend(built[0])
            ops.extend(built[1])
            prepared.extend(built[2])
        flush()
        return [r for r in results if r is not None]

    def _build(self, commit: Commit
               ) -> tuple[list[Compare], list[Put | Delete], list[Prepared]] | str:
        """The transaction of one commit; when it exceeds what etcd allows, why."""
        settings = self.values.settings
        leases = self.values.leases
        compares: list[Compare] = []
        ops: list[Put | Delete] = []
        prepared: list[Prepared] = []

        def link(full_key: str, value: pb.Value, lease: int | None) -> None:
            item = self.values.blobs.prepare(full_key, value, lease)
            prepared.append(item)
            guard, linked = item.link(lease)
            compares.extend(guard)
            ops.extend(linked)

        outcome = commit.outcome
        if outcome is not None:
            marker = self._keys.result(outcome.call_id)
            compares.append(VersionIs(marker, 0))
            ttl: float = settings.result_ttl_s if outcome.keep else settings.result_window_s
            if outcome.ttl_s is not None:
                ttl = outcome.ttl_s
            link(marker, outcome.value, leases.lease(ttl))
            if outcome.output_key:
                link(self._keys.value(outcome.output_key), outcome.value, None)
        if commit.multi is not None:
            self._multi(commit.multi, outcome.output_key if outcome else "", compares, ops, link)
        if commit.absent:
            compares.append(VersionIs(commit.absent, 0))
        compares += commit.guards
        if commit.records:
            records_ttl_s = commit.records_ttl_s
            lease = leases.lease(settings.schedule_ttl_s if records_ttl_s is None
                                 else records_ttl_s)
            ops += [Put(key, raw, lease) for key, raw in commit.records.items()]
        if commit.clears:
            ops += [Delete(prefix, prefix=True) for prefix in commit.clears]
        if len(ops) > self.max_ops or len(compares) > self.max_ops:
            return (f"more than {self.max_ops} operations in one etcd transaction "
                    "(etcd_max_txn_ops)")
        if (size := _bytes(ops)) > MAX_TXN_BYTES:
            # in bytes too: just over the limit, both round to the same MiB figure
            return (f"{size / MiB:.1f} MiB ({size} bytes) in one etcd transaction, over the "
                    f"limit of {MAX_TXN_BYTES / MiB:g} MiB ({MAX_TXN_BYTES} bytes; etcd refuses "
                    "requests over --max-request-bytes, 1.5 MiB by default)")
        return compares, ops, prepared

    def _execute(self, commit: Commit, compares: list[Compare], ops: list[Put | Delete],
                 prepared: list[Prepared], meanwhile: Callable[[], None] | None = None
                 ) -> Committed:
        done = self._run(compares, ops, prepared, meanwhile)
        return done if done.status is Status.DONE else self._why_not(commit, done.revision)

    def _run(self, compares: list[Compare], ops: list[Put | Delete],
             prepared: list[Prepared], meanwhile: Callable[[], None] | None = None
             ) -> Committed:
        self.values.blobs.write_chunks(prepared)
        try:
            ok, revision, previous = self.values.kv.txn_previous(compares, ops, meanwhile)
        except Exception:
            if self.values.blobs.drop_unless_landed(prepared):
                return Committed(Status.DONE, self.values.kv.revision())
            raise
        if ok:
            if previous:  # it overwrote values (an outcome's marker was new: nothing to drop)
                replaced = {k: v for k, v in previous.items()
                            if k.startswith(self._keys.values)}
                self.values.blobs.drop(self.values.blobs.blob_ids(replaced))
            return Committed(Status.DONE, revision)
        if self.values.blobs.drop_unless_landed(prepared):
            return Committed(Status.DONE, revision)  # applied by an earlier try of this call
        return Committed(Status.CONFLICT, revision)

    def _multi(self, multi: MultiWrites, output_key: str, compares: list[Compare],
               ops: list[Put | Delete], link: object) -> None:
        if not multi.writes and not multi.deletes and not output_key:
            return  # a reader: its snapshot was consistent, and it changes nothing
        prefix = self._keys.prefix
        for store_key, mod_revision in sorted(multi.reads.items()):
            compares.append(ModRevisionIs(prefix + store_key, mod_revision))
        written = set(multi.writes) | multi.deletes | ({output_key} if output_key else set())
        for key in sorted(written):
            if self._keys.relative(self._keys.value(key)) not in multi.reads:
                compares.append(ModRevisionBelow(self._keys.value(key),
                                                 multi.snapshot_revision + 1))
        for key, value in multi.writes.items():
            if key != output_key:
                link(self._keys.value(key), value, None)  # type: ignore[operator]
        for key in sorted(multi.deletes - set(multi.writes) - {output_key}):
            ops += [Delete(self._keys.value(key)), Delete(self._keys.result(key))]

    def _why_not(self, commit: Commit, revision: int) -> Committed:
        if commit.outcome is not None:
            existing = self.values.outcome(commit.outcome.call_id)
            if existing is not None:
                return Committed(Status.DUPLICATE, revision, existing)
        if commit.absent and self.values.kv.get(commit.absent) is not None:
            return Committed(Status.TAKEN, revision)
        return Committed(Status.CONFLICT, revision)
