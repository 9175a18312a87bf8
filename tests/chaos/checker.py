"""Proves, after a run and a quiet period, what the history and the final state contradict.

Every anomaly is shown from what clients saw and what is durably stored, never from logs:
  lost                      an op the client got no outcome for within its timeout
  unexpected-error          an error that is not a documented outcome (WORKER_LOST,
                            NO_RESOURCES, CONFLICT, TIMEOUT)
  wrong-result              a value that is not the one this op's input implies (a stale
                            output key lands here: the value is another op's)
  reply-differs-from-store  the outcome stored for an op differs from the one it replied
  balance-not-conserved     the accounts' sum is not what they started with
  lost-update               an account's balance differs from what the applied transfers
                            (those whose marker exists) make it (a transfer applied twice
                            would land here too)
  transfer-outcome-mismatch a marker for a transfer that failed, or none for one that did not
  stale-session-read        a session read older than the session's last read or write
  dag-half-made             a DAG record not ready or missing, or a function of a ready DAG
                            without exactly one pin record on a live worker
  stuck                     messages left in the namespace's queues, claims left in etcd, or
                            a call that does not complete on the healed fleet
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import droplet
from droplet.proto import pb  # the same module as droplet.pb
from tests.chaos import aftermath
from tests.chaos.history import (
    DOCUMENTED_ERRORS,
    ERROR,
    LOST,
    NO_EXPECTATION,
    OK,
    History,
    Op,
    error_name,
)
from tests.private_rabbit import QueueDepths

KINDS = ("lost", "unexpected-error", "wrong-result", "reply-differs-from-store",
         "balance-not-conserved", "lost-update", "transfer-outcome-mismatch",
         "stale-session-read", "dag-half-made", "stuck")
_CODE_NAMES = set(pb.ErrorCode.keys()) | {"CONFLICT"}
_MISSING = "<nothing stored>"


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Checker:
    def __init__(self, history: History, client: Any, accounts: list[str],
                 initial_balance: int, salt: int,
                 queue_depths: Callable[[], QueueDepths] | None,
                 final_timeout_s: float = 60.0) -> None:
        self.history = history
        self.client = client
        self.accounts = accounts
        self.initial_balance = initial_balance
        self.salt = salt
        self.queue_depths = queue_depths
        self.final_timeout_s = final_timeout_s
        self.found: dict[str, list[str]] = {k: [] for k in KINDS}

    def add(self, kind: str, text: str) -> None:
        self.found[kind].append(text)

    def run(self) -> dict[str, list[str]]:
        ops = self.history.ops()
        self._outcomes(ops)
        self._readback(ops)
        self._accounts(ops)
        self._sessions(ops)
        found = aftermath.dag_problems(self.client, self.history.note)
        self.found["dag-half-made"] += found
        self.found["stuck"] += aftermath.stuck(self.client, self.queue_depths, self.salt,
                                               self.history.next_number(),
                                               self.final_timeout_s)
        return self.found

    # -- what each op saw ------------------------------------------------------------------

    def _outcomes(self, ops: list[Op]) -> None:
        owner = {_frozen(o.expected): o.id for o in ops if o.expected is not NO_EXPECTATION}
        faults = self.history.faults()
        for op in ops:
            if op.outcome in (LOST, None):
                near = sorted(faults, key=lambda f: abs(f.start - op.start))[:3]
                hint = "; nearest faults: " + (", ".join(
                    f"{f.kind} {f.target}@{f.start:.1f}s"
                    for f in sorted(near, key=lambda f: f.start)) or "none")
                if op.store_key:  # did its outcome turn up after the client gave up?
                    hint += f"; stored by now: {self._read(op.store_key)[1]!r}"
                self.add("lost", f"{op.describe()}{hint}")
            elif op.outcome == ERROR and op.error not in DOCUMENTED_ERRORS:
                self.add("unexpected-error", f"{op.describe()}: {op.detail}")
            elif op.outcome == OK and op.expected is not NO_EXPECTATION \
                    and op.value != op.expected:
                whose = owner.get(_frozen(op.value))
                hint = f" (the result of {whose})" if whose else ""
                self.add("wrong-result",
                         f"{op.describe()}: expected {op.expected!r}, got {op.value!r}{hint}")

    def _read(self, key: str) -> tuple[str, Any]:
        """(OK, value) or (ERROR, code name) as stored, or (ERROR, _MISSING)."""
        for attempt in range(5):
            try:
                value = self.client.get_object(key)
            except droplet.StoreError:
                time.sleep(1 + attempt)
                continue
            except droplet.DropletError as exc:
                return ERROR, error_name(exc)
            return (ERROR, _MISSING) if value is None else (OK, value)
        raise RuntimeError(f"could not read {key!r} back")

    def _readback(self, ops: list[Op]) -> None:
        """Reads the stored outcome of every op that has one and compares it with the reply.
        An output key (reused) is compared for its last writer only, and not at all if a
        lost op ever used it: that call may still land, and last writer wins."""
        last: dict[str, Op] = {}
        unsure: set[str] = set()
        for op in ops:
            key = op.check.get("output_key")
            if key and (key not in last or op.start > last[key].start):
                last[key] = op
            if key and op.outcome in (LOST, None):
                unsure.add(key)
        for op in ops:
            if not op.store_key or op.outcome not in (OK, ERROR):
                continue
            key = op.check.get("output_key")
            if key and (last[key] is not op or key in unsure):
                continue
            if op.outcome == ERROR and op.error not in _CODE_NAMES:
                continue  # failed in the client before anything was stored
            stored = self._read(op.store_key)
            replied = (OK, op.value) if op.outcome == OK else (ERROR, op.error)
            if stored != replied:
                self.add("reply-differs-from-store",
                         f"{op.describe()}: store has {stored[1]!r} under {op.store_key!r}")

    # -- transfers -------------------------------------------------------------------------

    def _accounts(self, ops: list[Op]) -> None:
        transfers = [o for o in ops if "marker" in o.check]
        markers = self._get_many([o.check["marker"] for o in transfers])
        balances = self._get_many(self.accounts)
        expected = dict.fromkeys(self.accounts, self.initial_balance)
        for op in transfers:
            present = markers.get(op.check["marker"]) is not None
            if present:
                expected[op.check["src"]] -= op.check["amount"]
                expected[op.check["dst"]] += op.check["amount"]
            if op.outcome == OK and not present:
                self.add("transfer-outcome-mismatch", f"{op.describe()}: reported ok, no marker")
            elif op.outcome == ERROR and present:
                self.add("transfer-outcome-mismatch",
                         f"{op.describe()}: reported {op.error}, yet its marker is stored")
        total = sum(v or 0 for v in balances.values())
        start = self.initial_balance * len(self.accounts)
        if total != start:
            self.add("balance-not-conserved",
                     f"sum of balances {total} != {start} at start; balances {balances}")
        for acct in self.accounts:
            if balances.get(acct) != expected[acct]:
                self.add("lost-update", f"{acct} = {balances.get(acct)}, but the "
                         f"transfers whose marker exists make it {expected[acct]}")
        applied = sum(markers.get(o.check["marker"]) is not None for o in transfers)
        self.history.note(f"transfers: {len(transfers)} issued, {applied} markers found")

    def _get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 50):
            found.update(self.client.get_objects(keys[start:start + 50]))
        return found

    # -- sessions --------------------------------------------------------------------------

    def _sessions(self, ops: list[Op]) -> None:
        by_session: dict[str, list[Op]] = defaultdict(list)
        for op in ops:
            if "session" in op.check:
                by_session[op.check["session"]].append(op)
        for session_ops in by_session.values():
            floor, why = 0, "nothing yet"
            for op in sorted(session_ops, key=lambda o: o.start):
                if op.outcome != OK:
                    continue
                if op.check["session_op"] == "swrite":
                    if isinstance(op.value, int) and op.value > floor:
                        floor, why = op.value, f"{op.id} wrote {op.value}"
                    continue
                seen = [v or 0 for v in op.value] if isinstance(op.value, list) else []
                if not seen or min(seen) < floor:
                    self.add("stale-session-read",
                             f"{op.describe()}: read {op.value!r} after {why}")
                if seen and max(seen) > floor:
                    floor, why = max(seen), f"{op.id} read {max(seen)}"
