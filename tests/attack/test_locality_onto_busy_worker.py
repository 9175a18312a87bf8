"""Attack: calls that reference stored keys are placed on a worker busy with a long call.

Locality placement skips only workers "in back-off", those that reported a utilisation of
0.9 or more (scheduler/policy.py:26-40). A worker's utilisation counts a call only once it
has ended (worker/service.py:205-208 -> StatusReport.busy, worker/status.py:42-50): while
one call runs for minutes, every status record it publishes says it is idle. Calls that
reference keys it caches keep going to its own queue, where they wait behind the long call
(it consumes nothing meanwhile) while other workers sit idle.

README "Idle first. A plain call goes to an idle worker when there is one"; policy.py:
"unless that worker is in back-off (reported itself saturated)".
"""

from __future__ import annotations

import time
from typing import Any

from droplet.proto import pb
from droplet.scheduler.policy import pick_queue
from droplet.store.serializer import DropletReference
from tests.unit.inprocess import Fleet

SEEN: dict[str, Any] = {}


def read(lib: Any, value: Any) -> Any:
    return value


def long_call(lib: Any) -> str:
    status = SEEN["status"]
    for _ in range(3):  # a few status intervals into a long call
        time.sleep(0.05)
        SEEN["record"] = pb.WorkerStatus.FromString(status.record())
    return "done"


def test_a_worker_in_a_long_call_is_not_chosen_for_locality() -> None:
    fleet = Fleet()
    w1 = fleet.start_worker("w1")
    fleet.start_worker("w2")
    scheduler = fleet.start_scheduler()
    fleet.register("read", read)
    fleet.register("long_call", long_call)
    fleet.values.put("k", 1)
    fleet.call("read", DropletReference("k"), queue=fleet.names.worker("w1"))
    fleet.run_until_quiet()
    assert "k" in w1.service.cache, "w1 caches k"

    w1.service.status._interval_s = 0.01  # status intervals scaled down
    SEEN["status"] = w1.service.status
    fleet.call("long_call", queue=fleet.names.worker("w1"))
    fleet.step("w1")

    scheduler.state.workers["w1"] = SEEN["record"]  # what w1 published during the call
    queue = pick_queue(scheduler.state, ["k"])
    assert queue != fleet.names.worker("w1"), (
        f"a call referencing k goes to w1 while it is busy (it reported utilisation "
        f"{SEEN['record'].utilisation:.2f}); w2 is idle")
