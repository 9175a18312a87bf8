"""A pin or unpin request left in a dead worker's queue is dropped, not dead-lettered.

Found by the chaos history test (one run: "stuck: 1 message ready in <ns>.dead", with no
lost or wrong answer). A scheduler's pin request is an RPC on the worker's own queue
(scheduler/pinning.py); when that worker is killed or paused past its lease before taking
it, the scheduler counts the pin as refused after pin_timeout_s and moves the pin elsewhere,
and the reaper moves the request, with the rest of the dead worker's queue, to the call queue.
The call loop knew calls, DAG calls, triggers and schedule notices there, and dead-lettered
anything else as "unexpected": so a pin request for a worker that is gone ended in the
dead-letter queue, which the README keeps for bad input (undecodable, unsigned, wrong queue,
crashing a handler, poison), not for a worker fault the system is meant to survive. An unpin
request for a gone worker is as moot. Both are now dropped, like a schedule notice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from droplet.proto import envelope, pb
from droplet.scheduler import reaper as reaper_module
from droplet.scheduler.pinning import BrokerPins
from droplet.scheduler.reaper import Reaper

from .inprocess import Fleet


def f(lib: Any, *args: Any) -> Any:
    return ["f", *args]


def test_pin_and_unpin_requests_left_in_a_dead_workers_queue_are_not_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper_module, "_SETTLE_PAUSE_S", 0.0)
    fleet = Fleet()
    dead = fleet.start_worker("w1")
    fleet.start_worker("w2")
    scheduler = fleet.start_scheduler()
    fleet.register("f", f)
    dead.conn.close()  # killed (or paused past its lease) before it took its requests
    dead.service.membership.leave()
    scheduler.state.workers.pop("w1", None)
    fleet.workers.pop("w1")

    admin = fleet.broker.connect("admin")  # the scheduler's admin connection
    pins = BrokerPins(admin, fleet.names, fleet.signer, admin.consume_replies(),
                      replace(fleet.settings, pin_timeout_s=0.05))
    assert not pins.pin("w1", "d", "a"), "no answer from a dead worker: refused"
    pins.unpin("w1", "d", "b")
    queue = fleet.names.worker("w1")
    assert fleet.broker.queue_depth(queue) == 2

    reaper = Reaper(fleet.broker.connect, fleet.names, scheduler.state, fleet.kv,
                    fleet.values.keys, lambda: None)
    [(worker, entry)] = reaper.dead_members().items()
    assert reaper.reap(worker, entry) == 2, "both moved to the call queue"
    call = fleet.call("f", 1)  # the fleet goes on serving
    fleet.run_until_quiet()

    assert fleet.broker.queue_depth(fleet.names.dead) in (None, 0), (
        "a pin request for a gone worker is no bad input: nothing to dead-letter")
    assert fleet.broker.queue_depth(fleet.names.calls) == 0
    assert fleet.answers().get(call) == [["f", 1]]


def test_a_pin_request_published_to_the_call_queue_itself_is_still_refused() -> None:
    """Only what the reaper moved (marked resent) is dropped: a pin request sent to the
    call queue directly is on the wrong queue, and dead-lettered as before."""
    fleet = Fleet()
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.client.publish(fleet.names.calls, envelope.encode(
        [pb.Message(pin=pb.PinRequest(dag_name="d", function_name="a"))], fleet.signer))
    fleet.run_until_quiet()
    assert fleet.broker.queue_depth(fleet.names.dead) == 1
