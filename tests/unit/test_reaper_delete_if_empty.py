"""A scheduler deletes a dead worker's queue only once it is empty (scheduler/reaper.py).

Found by the attack on the DAG view (client/viewkeeper.py): a client's view may be a second
or two old, so it may send a DAG call's first trigger to a worker that died, while a scheduler
drains that worker's queue. Such a trigger is routed (the queue still exists), so it does not
come back to the client; if it lands after the last drain and before the queue is deleted, a
plain delete drops it with the queue and the call is never answered. The delete now asks the
broker for an empty queue only, and drains again when refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from droplet.scheduler import reaper as reaper_module
from droplet.scheduler.reaper import Reaper

from .inprocess import Fleet


def f(lib: Any, *args: Any) -> Any:
    return ["f", *args]


def dead_worker_fleet() -> tuple[Fleet, Any, str]:
    """Workers w1 and w2 and a scheduler; w1 is gone (no consumer, no lease) and its queue
    left for the reaper: (fleet, the scheduler, w1's queue)."""
    fleet = Fleet()
    dead = fleet.start_worker("w1")
    fleet.start_worker("w2")
    scheduler = fleet.start_scheduler()
    fleet.register("f", f)
    dead.conn.close()  # the process is gone (or its broker connection dropped)
    dead.service.membership.leave()  # ... and its lease ran out
    scheduler.state.workers.pop("w1", None)
    return fleet, scheduler, fleet.names.worker("w1")


def reaper_racing(fleet: Fleet, scheduler: Any, queue: str,
                  before_delete: Callable[[], None]) -> Reaper:
    """A reaper whose connection runs `before_delete` just before each delete of `queue`:
    what another process does in the window between the last drain and the delete."""
    def connect() -> Any:
        conn = fleet.broker.connect()
        delete = conn.delete_queue

        def racing(name: str, if_empty: bool = False) -> bool:
            if name == queue:
                before_delete()
            return delete(name, if_empty=if_empty)

        conn.delete_queue = racing  # type: ignore[method-assign]
        return conn

    return Reaper(connect, fleet.names, scheduler.state, fleet.kv, fleet.values.keys,
                  lambda: None)


@pytest.mark.parametrize("late_messages", [1, 3])
def test_a_call_sent_to_a_dead_workers_queue_after_the_drain_is_moved_not_dropped(
        monkeypatch: pytest.MonkeyPatch, late_messages: int) -> None:
    monkeypatch.setattr(reaper_module, "_SETTLE_PAUSE_S", 0.0)
    fleet, scheduler, queue = dead_worker_fleet()
    late: list[str] = []

    def send_late() -> None:  # a publisher with a stale view sends meanwhile
        if len(late) < late_messages:
            late.append(fleet.call("f", len(late), queue=queue))

    reaper = reaper_racing(fleet, scheduler, queue, send_late)
    [(worker, entry)] = reaper.dead_members().items()
    assert worker == "w1"
    assert reaper.reap(worker, entry) == late_messages, "each late call moved"
    assert queue not in fleet.broker.queues, "deleted once empty"
    fleet.workers.pop("w1")
    fleet.run_until_quiet()
    answers = fleet.answers()
    assert [answers.get(call) for call in late] == [[["f", n]] for n in range(late_messages)]


def test_a_queue_that_keeps_receiving_stays_and_nothing_in_it_is_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper_module, "_SETTLE_PAUSE_S", 0.0)
    fleet, scheduler, queue = dead_worker_fleet()
    late: list[str] = []
    reaper = reaper_racing(fleet, scheduler, queue,
                           lambda: late.append(fleet.call("f", len(late), queue=queue)))
    [(worker, entry)] = reaper.dead_members().items()
    moved = reaper.reap(worker, entry)
    assert queue in fleet.broker.queues, "not deleted while calls keep arriving"
    assert moved == len(late) == reaper_module._DELETE_TRIES, "each drained all the same"
    assert reaper.dead_members(), "its member entry stays: the next pass reaps it again"
    fleet.workers.pop("w1")
    fleet.run_until_quiet()
    answers = fleet.answers()
    assert [answers.get(call) for call in late] == [[["f", n]] for n in range(len(late))]
