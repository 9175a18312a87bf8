"""A scheduler deletes a dead worker's queue only while nobody consumes it (scheduler/reaper.py).

Found by attacking ae9ff83 (the delete "only if empty"): the broker's if-empty counts the
messages waiting in a queue, not those delivered and unacked, on RabbitMQ (both transports,
checked on 3.10) as in the stub. The reaper looks for consumers once, before its delete
loop; a worker that was paused past its lease and whose broker connection dropped consumes
again as soon as it reconnects (its queue still exists), maybe before it registers again in
etcd. If it took a call meanwhile, the "empty" queue was deleted under it, and the call it
held went with the queue: when that worker died for good, nothing was left to requeue it to.
The delete now asks for an empty and unused queue at once (queue.delete if-empty and
if-unused), so the broker refuses while a consumer holds deliveries.
"""

from __future__ import annotations

from typing import Any

import pytest

from droplet.scheduler import reaper as reaper_module

from .test_reaper_delete_if_empty import dead_worker_fleet, reaper_racing


def test_a_queue_whose_revived_worker_holds_a_call_is_not_deleted_under_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper_module, "_SETTLE_PAUSE_S", 0.0)
    fleet, scheduler, queue = dead_worker_fleet()  # w1's connection dropped while paused
    held: list[Any] = []
    revived = fleet.broker.connect("w1-reconnected")
    late: list[str] = []

    def revive() -> None:  # w1 reconnects and consumes its queue; it takes a call arriving
        if not late:
            revived.consume(queue, prefetch=1)
            late.append(fleet.call("f", 7, queue=queue))
            held.extend(revived.poll(0.1))

    reaper = reaper_racing(fleet, scheduler, queue, revive)
    [(worker, entry)] = reaper.dead_members().items()
    reaper.reap(worker, entry)
    assert len(held) == 1, "the revived worker took the call, unacked"
    assert queue in fleet.broker.queues, "not deleted while its worker consumes it"

    # w1 dies for good before running it: its delivery goes back to its queue, and the next
    # pass moves it to a live worker.
    revived.close()
    fleet.workers.pop("w1")
    for worker_id, entry in reaper.dead_members().items():
        reaper.reap(worker_id, entry)
    assert queue not in fleet.broker.queues
    fleet.run_until_quiet()
    assert fleet.answers().get(late[0]) == [["f", 7]], "the call w1 held was answered"
