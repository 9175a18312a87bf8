"""Attack on Committer.apply_all (the running byte count of a group): plain and non-plain
commits mixed, duplicates of one call in a batch and of a call stored before, output keys
shared, outcomes too large, and a group that fails and is re-applied one by one. Whatever the
grouping, each commit's result must be the one applying the commits one by one, in order,
would give, and no transaction may pass etcd's request limit."""

from __future__ import annotations

import random
from typing import Any

import pytest

from droplet.proto import pb
from droplet.store.commits import MAX_TXN_BYTES, Commit, Committer, Outcome, Status
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from tests.unit.helpers import SETTINGS

pytestmark = pytest.mark.timeout(60)


class SizedKV(MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def txn_previous(self, compares: Any, ops: Any, meanwhile: Any = None) -> Any:
        ops = list(ops)
        self.sizes.append(sum(len(op.key) + len(getattr(op, "value", b"") or b"") + 16
                              for op in ops))
        return super().txn_previous(compares, ops, meanwhile)


def _value(size: int, tag: int) -> pb.Value:
    return pb.Value(type=pb.PICKLE, body=tag.to_bytes(4, "big") * (size // 4 + 1))


def _batch(rng: random.Random) -> list[Commit]:
    commits: list[Commit] = []
    for i in range(rng.randint(5, 60)):
        call = f"c{rng.randint(0, 25)}"  # duplicates in a batch and across batches
        size = rng.choice([10, 100, 3000, 40_000, 60_000, 300_000])
        kind = rng.random()
        outcome = Outcome(call, _value(size, i),
                          output_key=rng.choice(["", "", "k1", "k2"]))
        if kind < 0.7:
            commits.append(Commit(outcome=outcome))
        elif kind < 0.85:
            commits.append(Commit(outcome=outcome, records={f"/rec/{i}": b"r" * size}))
        else:
            commits.append(Commit(records={f"/rec/{i}": b"p" * size}))
    return commits


def _status(done: Any) -> tuple[Status, bytes | None]:
    return done.status, None if done.existing is None else done.existing.body


@pytest.mark.parametrize("seed", range(12))
def test_grouped_results_equal_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    batches = [_batch(rng) for _ in range(3)]
    grouped_kv, single_kv = SizedKV(), SizedKV()
    grouped = Committer(ValueStore(grouped_kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    single = Committer(ValueStore(single_kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    for commits in batches:
        together = grouped.apply_all(commits)
        alone = [single.apply(c) for c in commits]
        assert len(together) == len(commits)
        assert [_status(d) for d in together] == [_status(d) for d in alone]
    assert all(size <= MAX_TXN_BYTES for size in grouped_kv.sizes), max(grouped_kv.sizes)
    for call in range(26):
        a = grouped.values.outcome(f"c{call}")
        b = single.values.outcome(f"c{call}")
        assert (a and a.body) == (b and b.body), f"c{call}"


def test_unrelated_commits_between_plain_outcomes_do_not_split_their_group() -> None:
    kv = SizedKV()
    committer = Committer(ValueStore(kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    commits: list[Commit] = []
    for i in range(10):
        commits.append(Commit(outcome=Outcome(f"p{i}", _value(100, i))))
        commits.append(Commit(records={f"/rec/{i}": b"r"}))
    done = committer.apply_all(commits)
    assert [d.status for d in done] == [Status.DONE] * 20
    assert len(kv.sizes) == 1 + 10, kv.sizes  # the plain ones together, each record alone


def test_a_later_outcome_of_a_call_waits_for_the_grouped_earlier_one() -> None:
    committer = Committer(ValueStore(SizedKV(), SETTINGS), SETTINGS.etcd_max_txn_ops)
    first = Commit(outcome=Outcome("x", _value(10, 1)))
    later = Commit(outcome=Outcome("x", _value(10, 2)), records={"/rec/x": b"r"})
    done = committer.apply_all([Commit(outcome=Outcome("y", _value(10, 3))), first, later])
    assert [d.status for d in done] == [Status.DONE, Status.DONE, Status.DUPLICATE]
    stored = committer.values.outcome("x")
    assert stored is not None and stored.body == _value(10, 1).body, "the later one won"


def test_too_large_says_by_how_much_even_just_over_the_limit() -> None:
    committer = Committer(ValueStore(SizedKV(), SETTINGS), SETTINGS.etcd_max_txn_ops)
    done = committer.apply(Commit(records={"/rec/big": bytes(MAX_TXN_BYTES)}))
    assert done.status is Status.TOO_LARGE
    # was "1.0 MiB in one etcd transaction, over the limit of 1 MiB"
    assert f"({MAX_TXN_BYTES} bytes" in done.why and "1.0 MiB (" in done.why, done.why
