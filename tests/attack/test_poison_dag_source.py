"""Attack: the first step of a DAG call becomes poison (its worker died on it repeatedly).

The scheduler sends a source step's DagSchedule notice and its BEGIN trigger to the same
worker queue, so they travel in one envelope (scheduler/dags.py:240-250, acks.group). Past
dead_letter_max_redeliveries, the cycle refuses every message of that envelope
(cycle.py:101-105 -> _refuse_all, 297-313), and fail_call writes an outcome for each one:
two outcomes for the same call id, batched into one transaction (commits.py:81-121), which
etcd refuses ("duplicate key given in txn request"). That StoreError is not caught on this
path: it escapes Cycle.run and the worker's session, run_with_reconnect reconnects at once
(its back-off resets after every successful connect, broker/session.py:33-37), the message
comes back, and so on for ever: the call is never answered and the worker spins.

README "Bad input never hurts the running system. ... A message redelivered more than
dead_letter_max_redeliveries times is dead-lettered as poison"; keeper.py: a function that
ignores its time limit gets its worker exited "until the poison counter dead-letters it".
"""

from __future__ import annotations

import contextlib
from typing import Any

from droplet.proto import pb
from tests.unit.inprocess import Fleet


class Died(BaseException):
    """Stands for the process dying inside the function (os._exit, SIGKILL, OOM)."""


def source(lib: Any, x: int) -> int:
    raise Died()


def test_a_poison_dag_source_step_is_dead_lettered_and_its_call_answered() -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.start_scheduler()
    fleet.register("source", source)
    fleet.pin(pb.Dag(name="d", functions=["source"]), {"source": "w1"})
    call_id = fleet.call_dag("d", {"source": [1]})
    fleet.schedule()

    # The step kills its worker every time (os._exit, a hard time limit, an OOM kill).
    for _ in range(fleet.settings.dead_letter_max_redeliveries + 1):
        with contextlib.suppress(Died):
            fleet.step("w1")
        fleet.crash("w1")
        fleet.start_worker("w1")

    try:
        fleet.step("w1")  # one delivery, one cycle
    except Exception as exc:
        raise AssertionError(f"the poison refusal escaped the message cycle: {exc}") from exc
    fleet.run_until_quiet()
    stored = fleet.stored(call_id)
    assert stored is not None, "the call whose step was poison was never answered"
