"""Attack on idle-first placement: a worker lingering for a batch holds calls, but its status
said nothing was in hand (in_hand was set only once the batch ran), so a scheduler could
place a tagged call behind the linger (up to 10 s) while another qualifying worker sat
idle. While it lingers its status now counts the calls it gathered."""

from __future__ import annotations

from typing import Any

import cloudpickle

from droplet.proto import pb
from droplet.store.metadata import Metadata
from tests.unit.inprocess import Fleet
from tests.unit.test_inprocess_faults import assert_one_outcome_each


def tripled(lib: Any, batch: list[tuple[int]]) -> list[int]:
    return [x * 3 for (x,) in batch]


def test_a_worker_lingering_for_a_batch_reports_the_calls_it_holds() -> None:
    fleet = Fleet()
    member = fleet.start_worker("w1")
    Metadata(fleet.kv, fleet.settings, fleet.signer).put_function(pb.Function(
        name="b", body=cloudpickle.dumps(tripled), batching=True, batch_size=8,
        batch_linger_s=0.5))  # (long enough to be still lingering on a crowded host)
    member.service.state.batching.add("b")
    calls = [fleet.call("b", 1, queue=fleet.names.worker("w1"))]
    seen: list[int] = []
    poll = member.conn.poll

    def watched(timeout_s: float) -> Any:
        seen.append(member.service.status.in_hand)
        return poll(timeout_s)

    member.conn.poll = watched  # type: ignore[method-assign]
    fleet.step("w1", 0.5)
    # The last poll is the linger's (a batch of one is never full before its deadline).
    assert seen and seen[-1] >= 1, f"idle by its status while lingering: {seen}"
    fleet.run_until_quiet()
    assert_one_outcome_each(fleet, calls)
    assert member.service.status.in_hand == 0
