"""Attack: a worker paused past its lease comes back, then dies for good.

When the paused worker's lease runs out, a scheduler reaps it and deletes its fleet entry
(scheduler/reaper.py:69-71). On SIGCONT the worker re-registers under a new lease
(store/membership.py:70-81) and re-declares its queue on reconnect, but it writes its fleet
entry only once per process (worker/service.py:154-164, `_joined`). So it is alive, placed
on (locality placement sends calls to its own queue), and no longer listed under fleet/:
when it later dies, `Reaper.dead_members` (reaper.py:47-52) never lists it, and whatever is
left in its queue stays there for ever. The calls hang until their clients time out.

README "The fleet heals itself": a dead worker's queue is moved to the call queue.
"""

from __future__ import annotations

from typing import Any

from tests.unit.inprocess import Fleet


def f(lib: Any, x: int) -> int:
    return x + 100


def test_a_worker_revived_after_being_reaped_is_reaped_again_when_it_dies() -> None:
    fleet = Fleet()
    w1 = fleet.start_worker("w1")
    fleet.start_worker("w2")
    scheduler = fleet.start_scheduler()
    fleet.register("f", f)
    reaper = scheduler.reconciler._reaper

    # w1 freezes past its lease: a scheduler reaps it (queue and fleet entry deleted).
    lease = w1.service.membership.lease_id
    assert lease is not None
    fleet.kv.expire_lease(lease)
    dead = reaper.dead_members()
    reaper.reap("w1", dead["w1"])

    # SIGCONT: its keepalive re-registers it; its consumer was cancelled, so it reconnects
    # and declares its queue again (run_with_reconnect -> open_session).
    w1.service.membership._register()
    w1.conn.close()
    w1.conn = fleet.broker.connect("w1-again")
    w1.cycle = w1.service.open_session(w1.conn)
    assert "w1" in scheduler.state.workers, "w1 is alive again"

    # A call is placed on w1's own queue (as locality placement does), and w1 dies before
    # running it.
    call_id = fleet.call("f", 1, queue=fleet.names.worker("w1"))
    fleet.crash("w1")

    # Every scheduler reconciles; w2 is idle and would take the call once it is moved.
    for _ in range(3):
        for worker_id, entry in reaper.dead_members().items():
            reaper.reap(worker_id, entry)
        fleet.run_until_quiet()

    left = fleet.broker.queue_depth(fleet.names.worker("w1"))
    assert fleet.stored(call_id) == 101, (
        f"the call left in dead w1's queue was never moved ({left} message(s) still there)")
