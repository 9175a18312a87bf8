"""Broker faults and the poison count (worker/poison.py).

A session that ends on a broker error with a delivery in hand leaves that delivery's count
behind, as a worker that died on it does: the message itself may be what closes the
connection (tests/unit/test_poison_session_killer.py). A fault of the broker's then costs one
count, which the run that completes clears: a call that meets fewer faults than
`dead_letter_max_redeliveries` is answered and leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import pytest

from droplet.broker.stub import StubConnection
from droplet.errors import BrokerError
from tests.unit.inprocess import Fleet
from tests.unit.refusing_broker import publish_call, reconnect


def double(lib: Any, x: int) -> int:
    return 2 * x


def fail_publishes(conn: StubConnection) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise BrokerError("connection reset by peer")
    conn.publish = broken  # type: ignore[method-assign]




def test_a_call_that_outlives_broker_faults_is_answered_and_leaves_no_count() -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.register("double", double)
    call_id = publish_call(fleet, "double", 21, maybe_done=True)  # counted every time
    faults = fleet.settings.dead_letter_max_redeliveries - 1  # counted 1..limit: no poison
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
