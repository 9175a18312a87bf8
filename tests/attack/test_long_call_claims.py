"""Attack: long-call claims held by a worker whose broker connection drops.

During a long call the worker acks everything in hand and keeps it as claims in etcd
(worker/claims.py). If the broker connection then breaks (a broker restart, a network blip,
a missed heartbeat), the worker reconnects and `open_session` throws its buffer away
(worker/service.py:185-186, "unacked: the broker has them back after a reconnect"). But the
claimed deliveries were acked: the broker has nothing to give back. Their claims stay in etcd
under the worker's own (id, incarnation), which is alive, so no scheduler settles them
(scheduler/reaper.py:76-93): the calls never run and never answer, and the claims never go.

README "Nothing hangs": "A call running longer than long_call_s is acked and held as a claim
in etcd ..."; "Faults are survived: ... workers ... reconnect to RabbitMQ ... and resume".
"""

from __future__ import annotations

import contextlib
from typing import Any

from droplet.errors import BrokerError
from tests.unit.inprocess import Fleet

HOOK: dict[str, Any] = {}


def long_call(lib: Any, x: int) -> int:
    """Runs "long": the keeper hands what is in hand over to claims, then the broker
    connection drops before the worker publishes the result."""
    member = HOOK["member"]
    member.service._go_long(member.conn)  # what the keeper thread does past long_call_s
    member.conn.close()  # the connection breaks during the long call
    return x


def quick(lib: Any, x: int) -> int:
    return x * 10


def test_deliveries_claimed_during_a_long_call_survive_a_reconnect() -> None:
    fleet = Fleet()
    member = fleet.start_worker("w1")
    HOOK["member"] = member
    fleet.register("long_call", long_call)
    fleet.register("quick", quick)
    own = fleet.names.worker("w1")
    slow = fleet.call("long_call", 1, queue=own)
    waiting = fleet.call("quick", 2, queue=own)  # buffered behind the long call

    with contextlib.suppress(BrokerError):  # then run_with_reconnect: a new session
        fleet.step("w1")
    conn = fleet.broker.connect("w1-again")
    member.conn, member.cycle = conn, member.service.open_session(conn)
    fleet.run_until_quiet()
    scheduler = fleet.start_scheduler()
    settled = scheduler.reconciler._reaper.settle_claims()  # what every scheduler runs
    fleet.run_until_quiet()

    claims, _ = fleet.kv.get_prefix(member.service.keys.claims)
    assert fleet.stored(slow) == 1, "the long call's outcome was stored before the drop"
    assert fleet.stored(waiting) == 20, (
        f"the call buffered behind the long call never ran; claims left in etcd: "
        f"{len(claims)}, settled by a scheduler: {settled}")
    assert not claims, "claims of a live worker are never settled"
