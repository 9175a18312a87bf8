"""Attack: a DAG step that kills every worker that runs it is never dead-lettered.

The poison counter counts deliveries the broker marks as redelivered, keyed by the body's
digest (worker/service.py:278-291). A step that kills its worker goes back to the dead
worker's own queue; unless a process comes back under the very same id, a scheduler's reaper
moves it to the call queue as a fresh message (scheduler/reaper.py:124-144, not redelivered)
and the scheduler re-encodes it for the step's new worker (scheduler/dags.py:264-271, a new
digest). So the count never grows: the step kills one worker after another for ever, and the
call is never answered. Workers started without --id get a fresh id each time (<host>-<pid>,
what `droplet up` and LocalCluster do), so this is the default.

README "A message redelivered more than dead_letter_max_redeliveries times is dead-lettered
as poison"; worker/keeper.py: the call is redelivered "until the poison counter dead-letters
it".
"""

from __future__ import annotations

import contextlib
from typing import Any

from droplet.proto import pb
from droplet.store.metadata import Metadata
from tests.unit.inprocess import Fleet


class Died(BaseException):
    """Stands for the process dying inside the function (OOM kill, os._exit, segfault)."""


KILLED: list[str] = []


def deadly(lib: Any, x: int) -> int:
    KILLED.append(lib.getid())
    raise Died()


def test_a_step_that_kills_every_worker_is_dead_lettered_after_the_limit() -> None:
    KILLED.clear()
    fleet = Fleet()
    scheduler = fleet.start_scheduler()
    fleet.register("deadly", deadly)
    metadata = Metadata(fleet.kv, fleet.settings, fleet.signer)
    fleet.start_worker("w0")
    fleet.pin(pb.Dag(name="d", functions=["deadly"]), {"deadly": "w0"})
    call_id = fleet.call_dag("d", {"deadly": [1]})
    fleet.schedule()

    limit = fleet.settings.dead_letter_max_redeliveries
    for generation in range(limit + 4):
        current = f"w{generation}"
        with contextlib.suppress(Died):
            fleet.run_until_quiet()
        if fleet.stored(call_id) is not None:
            break
        # The worker died on the step; supervisors start a fresh process (a new id), the
        # fleet heals: the pin moves, the reaper moves what was left in the dead queue.
        fleet.crash(current)
        successor = f"w{generation + 1}"
        fleet.start_worker(successor)
        metadata.release_pin(pb.PinRecord(dag_name="d", function_name="deadly",
                                          worker_id=current))
        assert metadata.claim_pin(successor, "d", "deadly")
        fleet.workers[successor].service.state.pinned = ("d", "deadly")
        reaper = scheduler.reconciler._reaper
        for worker_id, entry in reaper.dead_members().items():
            reaper.reap(worker_id, entry)
        fleet.schedule()

    assert fleet.stored(call_id) is not None, (
        f"the step killed {len(KILLED)} workers ({limit} redeliveries allowed) and its call "
        "was never answered")
