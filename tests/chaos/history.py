"""The history of a chaos run: every operation the clients issued and every fault injected.

A history is only ever appended to, and an operation gets exactly one outcome, so the checker
judges what clients actually saw, never a value corrected after the fact. Each operation also
carries what the checker needs to verify it later without trusting the system: the value its
input implies (`expected`), the key its result should be stored under (`store_key`), the
session it belongs to, the marker key a transfer writes, and so on.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import droplet
from droplet.proto import pb  # the same module as droplet.pb

# Outcomes.
OK = "ok"
ERROR = "error"
LOST = "lost"  # the client gave up waiting (DropletTimeoutError): no outcome at all

# Error code names that are documented outcomes rather than anomalies by themselves.
DOCUMENTED_ERRORS = frozenset({"WORKER_LOST", "NO_RESOURCES", "CONFLICT", "TIMEOUT"})

NO_EXPECTATION = object()  # an op whose value cannot be predicted from its input


@dataclass
class Op:
    """One client operation, from the moment it was issued to its single outcome."""

    id: str
    kind: str  # call-get, call-burst, exec-func, chain-outkey, fan-direct, xfer-future, ...
    client: int
    input: dict[str, Any]
    start: float
    expected: Any = NO_EXPECTATION
    # Where the system stores this op's outcome (None: not stored, e.g. direct responses).
    store_key: str | None = None
    # Checker hints: "session" and "session_op" (swrite/sread); "marker", "amount", "src"
    # and "dst" for transfers; "output_key" for output keys reused by later ops.
    check: dict[str, Any] = field(default_factory=dict)
    end: float | None = None
    outcome: str | None = None
    value: Any = None
    error: str | None = None  # error code name (or exception class name) when outcome=error
    detail: str = ""

    def describe(self) -> str:
        """A short line for the report."""
        took = f"{self.end - self.start:.1f}s" if self.end is not None else "?"
        shown = self.error if self.outcome == ERROR else repr(self.value)[:80]
        return (f"{self.id} @{self.start:.1f}s {self.kind} {self.input} -> {self.outcome} "
                f"{shown} (after {took})")


@dataclass(frozen=True)
class Fault:
    """One injected fault: what, on which target, when it began and ended."""

    kind: str
    target: str
    start: float
    end: float
    note: str = ""


class History:
    """Thread-safe and append-only: operations are added and completed exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ops: list[Op] = []
        self._faults: list[Fault] = []
        self.t0 = time.monotonic()
        self.notes: list[str] = []  # things the run could not do (e.g. no private broker)

    def start_clock(self) -> None:
        """Times count from here (the workload's start), not from the services' set-up."""
        self.t0 = time.monotonic()

    def now(self) -> float:
        """Seconds since the history began: every time in it is on this clock."""
        return time.monotonic() - self.t0

    def begin(self, kind: str, client: int, input: dict[str, Any], **fields: Any) -> Op:
        """Records an operation as issued; the caller must complete it exactly once."""
        with self._lock:
            op = Op(f"o{next(self._ids)}", kind, client, dict(input), self.now(), **fields)
            self._ops.append(op)
        return op

    def next_number(self) -> int:
        """A number no other operation uses: unique inputs make stale values visible."""
        with self._lock:
            return next(self._ids)

    def _complete(self, op: Op, outcome: str, value: Any, error: str | None,
                  detail: str) -> None:
        with self._lock:
            if op.outcome is not None:
                raise RuntimeError(f"{op.id} completed twice ({op.outcome}, then {outcome})")
            op.end = self.now()
            op.outcome, op.value, op.error, op.detail = outcome, value, error, detail

    def ok(self, op: Op, value: Any) -> None:
        self._complete(op, OK, value, None, "")

    def fail(self, op: Op, error: str, detail: str = "") -> None:
        self._complete(op, ERROR, None, error, detail[:300])

    def lose(self, op: Op, detail: str = "") -> None:
        self._complete(op, LOST, None, None, detail[:300])

    def fault(self, kind: str, target: str, start: float, note: str = "") -> None:
        with self._lock:
            self._faults.append(Fault(kind, target, start, self.now(), note))

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)


def error_name(exc: BaseException) -> str:
    """The error code's name (unknown codes by number), else the exception's class."""
    code = getattr(exc, "code", droplet.NO_ERROR)
    if code == droplet.NO_ERROR:
        return type(exc).__name__
    try:
        return str(pb.ErrorCode.Name(code))
    except ValueError:
        return f"CODE_{code}"


def settle(history: History, op: Op, run: Callable[[float], Any], timeout_s: float) -> None:
    """Runs an op (given what is left of its time) and records its single outcome: a client
    timeout leaves it without one (lost); any other exception is its error."""
    try:
        value = run(max(0.5, op.start + timeout_s - history.now()))
    except droplet.DropletTimeoutError as exc:
        history.lose(op, str(exc))
    except Exception as exc:
        history.fail(op, error_name(exc), str(exc))
    else:
        history.ok(op, value)
