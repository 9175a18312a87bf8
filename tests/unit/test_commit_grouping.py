"""Plain outcomes committed together: as few etcd transactions as its limits allow
(store/commits.py Committer.apply_all)."""

from __future__ import annotations

from typing import Any

from droplet.proto import pb
from droplet.store.commits import MAX_TXN_BYTES, Commit, Committer, Outcome, Status
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore

from .helpers import SETTINGS


class CountingKV(MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[int] = []  # bytes written by each

    def txn_previous(self, compares: Any, ops: Any, meanwhile: Any = None) -> Any:
        ops = list(ops)
        self.transactions.append(sum(len(getattr(op, "value", b"")) for op in ops))
        return super().txn_previous(compares, ops, meanwhile)


def _outcomes(count: int, size: int) -> list[Commit]:
    return [Commit(outcome=Outcome(f"call-{i}", pb.Value(type=pb.PICKLE, body=bytes(size))))
            for i in range(count)]


def test_small_outcomes_of_one_envelope_go_in_one_transaction() -> None:
    kv = CountingKV()
    values = ValueStore(kv, SETTINGS)
    done = Committer(values, SETTINGS.etcd_max_txn_ops).apply_all(_outcomes(16, 100))
    assert [d.status for d in done] == [Status.DONE] * 16
    assert len(kv.transactions) == 1
    assert all(values.outcome(f"call-{i}") is not None for i in range(16))


def test_outcomes_too_large_for_one_transaction_are_split_at_etcds_request_limit() -> None:
    kv = CountingKV()
    values = ValueStore(kv, SETTINGS)
    size = 60 * 1024  # stored inline (at most 64 KiB): all of it in the transaction
    done = Committer(values, SETTINGS.etcd_max_txn_ops).apply_all(_outcomes(40, size))
    assert [d.status for d in done] == [Status.DONE] * 40
    assert all(written <= MAX_TXN_BYTES for written in kv.transactions)
    assert len(kv.transactions) == -(-40 * size // MAX_TXN_BYTES), kv.transactions
    assert all(values.outcome(f"call-{i}") is not None for i in range(40))
