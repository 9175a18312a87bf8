"""The functions and DAGs the chaos workload runs, and the values their inputs imply.

Every result is a pure function of the op's input and a per-run salt, so a value that belongs
to another call (a stale output key, a crossed reply) or to another run is recognisable. The
functions are closures built here, so cloudpickle ships them by value to workers that cannot
import this test package.

Only two DAGs are registered because every DAG function is pinned on a worker of its own:
  chaos-line  a -> b      plain chains, MULTI transfers and session writes/reads (by mode)
  chaos-fan   s1, s2 -> j a fan-in: the join waits for a fast and a slow source
That is 5 pins; the cluster needs at least one spare worker for pins to move to.
"""

from __future__ import annotations

import threading
import time
from typing import Any

LINE_DAG = "chaos-line"
FAN_DAG = "chaos-fan"
PLAIN = "chaos-f"
LINE_A, LINE_B = "chaos-line-a", "chaos-line-b"
FAN_S1, FAN_S2, FAN_J = "chaos-fan-s1", "chaos-fan-s2", "chaos-fan-j"

SLOW_STEP_S = 2.5  # a slow chain step: longer than a client's wait before it polls the store


class SlowSteps:
    """Hands out the right to one slow chain step every `every_s` seconds (all clients), so
    that slow steps show up regularly without stalling the pinned worker that runs them."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._lock = threading.Lock()
        self._last = 0.0

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._every_s:
                return False
            self._last = now
            return True


def account(n: int) -> str:
    return f"acct-{n}"


def marker(op_id: str) -> str:
    """The key a transfer writes, in the same MULTI call, to show it was applied."""
    return f"xfer-{op_id}"


def plain_expected(x: int, salt: int) -> int:
    return x * 7 + salt


def chain_expected(x: int, salt: int) -> int:
    return (x * 3 + 1) * 5 + salt


def fan_expected(x: int) -> list[int]:
    return [x, x * 2, x * 3 + 1]


def register_all(client: Any, salt: int) -> None:
    """Registers the plain function and both DAGs (raises if a DAG cannot be created)."""

    def plain(lib: Any, x: int) -> int:
        return x * 7 + salt

    def line_a(lib: Any, mode: str, *args: Any) -> Any:
        import random as r
        import time as t

        if mode == "chain":
            x, slow = args
            t.sleep(r.uniform(0.0, 0.02))
            return ("chain", x * 3 + 1, slow)
        if mode == "xfer":  # read both balances from the call's snapshot, then dawdle
            op_id, src, dst, amount = args
            balances = lib.get([src, dst])
            t.sleep(r.uniform(0.02, 0.05))
            return ("xfer", op_id, src, dst, amount, balances[src], balances[dst])
        if mode == "swrite":  # never lowers the counter, so a re-run cannot undo a write
            key, value = args
            current = lib.get(key)
            if current is None or current < value:
                lib.put(key, value)
            return ("swrite", value)
        if mode == "sread":
            (key,) = args
            return ("sread", key, lib.get(key))
        raise ValueError(f"unknown mode {mode!r}")

    def line_b(lib: Any, payload: Any) -> Any:
        import time as t

        mode = payload[0]
        if mode == "chain":
            _, y, slow = payload
            if slow:
                t.sleep(SLOW_STEP_S)
            return y * 5 + salt
        if mode == "xfer":
            _, op_id, src, dst, amount, src_balance, dst_balance = payload
            lib.put_many({src: src_balance - amount, dst: dst_balance + amount,
                          f"xfer-{op_id}": amount})
            return [src_balance, dst_balance]
        if mode == "swrite":
            return payload[1]
        _, key, first = payload
        return [first, lib.get(key)]

    def fan_s1(lib: Any, x: int) -> int:
        import time as t

        t.sleep(0.005)
        return x * 2

    def fan_s2(lib: Any, x: int) -> int:
        import random as r
        import time as t

        t.sleep(r.uniform(0.05, 0.4))  # the join holds s1's trigger meanwhile
        return x * 3 + 1

    def fan_j(lib: Any, x: int, r1: int, r2: int) -> list[int]:
        return [x, r1, r2]

    client.register(plain, PLAIN)
    client.register(line_a, LINE_A)
    client.register(line_b, LINE_B)
    client.register(fan_s1, FAN_S1)
    client.register(fan_s2, FAN_S2)
    client.register(fan_j, FAN_J)
    for name, functions, connections in (
        (LINE_DAG, [LINE_A, LINE_B], [(LINE_A, LINE_B)]),
        (FAN_DAG, [FAN_S1, FAN_S2, FAN_J], [(FAN_S1, FAN_J), (FAN_S2, FAN_J)]),
    ):
        ok, code = client.register_dag(name, functions, connections)
        if not ok:
            raise RuntimeError(f"could not create DAG {name}: error code {code}")
