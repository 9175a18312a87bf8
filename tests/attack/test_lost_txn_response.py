"""Attack: etcd applies a transaction but its response is lost (a 5 s request timeout under
load, a connection reset, a leader change), and the client library retries it.

EtcdKV.call retries every DEADLINE_EXCEEDED / UNAVAILABLE failure of a transaction
(EtcdClient.call in store/etcd_client.py, under EtcdKV._txn), so a transaction that took
effect runs a second time, and its compares now fail (its own writes changed what they
guard). Both writers of large values then take the failure at face value and delete the
chunks they had just linked:

* ValueStore.switch (store/values.py:64-77): `not ok` -> drop the prepared blobs -> the head
  that the first execution linked now names deleted chunks: the value is unreadable for good
  (and the caller is told the write failed);
* Committer._run (store/commits.py:164-177): the same for a call's outcome over 64 KiB: the
  outcome head exists but cannot be read, so `_why_not` finds no outcome (values.py:135-146)
  and reports CONFLICT, which the cycle turns into "again" (cycle.py:201-203), the re-run's
  commit conflicts with the broken head for ever; the poison refusal that ends it conflicts
  too, and the caller never gets an answer.

README "Large values. ... switched in atomically, so readers see the old or the new value,
never a mix"; "Faults are survived ... etcd calls retry through an outage"; "At least once,
with one outcome per call".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from droplet.errors import DropletError
from droplet.store.kv import Compare, Op, Put
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from tests.unit.inprocess import SETTINGS, Fleet

BIG = "x" * (2 * 1024 * 1024)


class LostResponseKV(MemoryKV):
    """etcd as a client sees it when the first response to a matching transaction is lost:
    it was applied, and the client's retry applies it again (etcd.py's retry loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def txn_previous(self, compares: Iterable[Compare], success: Iterable[Op],
                     meanwhile: Callable[[], None] | None = None
                     ) -> tuple[bool, int, dict[str, bytes]]:
        compares, success = list(compares), list(success)
        first = super().txn_previous(compares, success, meanwhile)
        links_a_head = any(isinstance(o, Put) and ("/values/" in o.key or "/results/" in o.key)
                           for o in success)
        if self.armed and links_a_head:
            self.armed = False
            return super().txn_previous(compares, success)  # the retry's answer
        return first


def test_a_large_put_whose_response_was_lost_leaves_a_readable_value() -> None:
    kv = LostResponseKV()
    values = ValueStore(kv, SETTINGS)
    kv.armed = True
    with contextlib.suppress(DropletError):
        values.put("k", BIG)  # may report a failure; must not destroy the value
    try:
        stored = values.get("k")
    except DropletError as exc:
        raise AssertionError(f"the value under 'k' is broken for good: {exc}") from None
    assert stored in (None, BIG)


def big_result(lib: Any, n: int) -> str:
    return "y" * n


def test_a_large_result_whose_commit_response_was_lost_is_answered() -> None:
    kv = LostResponseKV()
    fleet = Fleet(kv=kv)
    fleet.start_worker("w1")
    fleet.register("big_result", big_result)
    kv.armed = True
    call_id = fleet.call("big_result", 200_000)
    for _ in range(fleet.settings.dead_letter_max_redeliveries + 3):
        with contextlib.suppress(DropletError):
            fleet.run_until_quiet(rounds=20)
    try:
        stored = fleet.stored(call_id)
    except DropletError as exc:
        raise AssertionError(f"the call's outcome is broken: {exc}") from None
    assert stored == "y" * 200_000, f"the call was never answered (stored: {stored!r:.40})"
