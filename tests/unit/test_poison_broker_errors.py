"""A broker that fails a worker's session while it answers a call is not the call's fault.

The poison count (worker/poison.py) is left behind only by a worker that died running a
message. A session that ends on a broker error (a RabbitMQ restart, a dropped connection) while
the worker lived must clear it as a finished run does: else a call redelivered after each of
`dead_letter_max_redeliveries` broker faults is dead-lettered as poison, its caller failed,
although no worker ever died on it.
"""

from __future__ import annotations

from typing import Any

import pytest

from droplet.broker.stub import StubConnection
from droplet.errors import BrokerError
from droplet.proto import envelope, pb
from droplet.store import serializer
from tests.unit.inprocess import Fleet


def double(lib: Any, x: int) -> int:
    return 2 * x


def call_that_may_have_run(fleet: Fleet, x: int) -> str:
    """A call as a scheduler re-sends it after a lost worker: counted on every delivery."""
    call = pb.FunctionCall(name="double", call_id="c-1", response_key="c-1",
                           response_address=fleet.reply_to, maybe_done=True)
    serializer.dump(x, call.arguments.values.add())
    fleet.client.publish(fleet.names.work, envelope.encode([pb.Message(call=call)],
                                                           fleet.signer),
                         reply_to=fleet.reply_to)
    return call.call_id


def fail_publishes(conn: StubConnection) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise BrokerError("connection reset by peer")
    conn.publish = broken  # type: ignore[method-assign]


def reconnect(fleet: Fleet, worker_id: str) -> None:
    """What run_with_reconnect does after a broker error: a new connection, a new session
    (the broker gives the unacked delivery back, redelivered)."""
    member = fleet.workers[worker_id]
    member.conn.close()
    member.conn = fleet.broker.connect(worker_id)
    member.cycle = member.service.open_session(member.conn)


def test_a_call_whose_sessions_fail_on_the_broker_is_not_taken_for_poison() -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.register("double", double)
    call_id = call_that_may_have_run(fleet, 21)
    faults = fleet.settings.dead_letter_max_redeliveries + 1
    for _ in range(faults):
        fail_publishes(fleet.workers["w1"].conn)
        with pytest.raises(BrokerError):
            while not fleet.step("w1", 0.5):
                pass
        reconnect(fleet, "w1")
    fleet.run_until_quiet()
    assert fleet.answers().get(call_id) == [42], (
        f"after {faults} broker faults the call was not answered: {fleet.answers()}")
    assert fleet.broker.queue_depth(fleet.names.dead) in (None, 0), "dead-lettered as poison"
    counts = [k for k in fleet.kv.get_prefix(fleet.values.keys.prefix)[0] if "deliver" in k]
    assert counts == [], f"delivery counts left behind: {counts}"
