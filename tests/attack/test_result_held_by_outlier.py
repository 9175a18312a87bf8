"""Attack: a quick call's result held back by an outlier run of a function known to be quick.

The cycle commits the outcomes of quick calls in one delivery together, deciding before each
message whether to commit what is pending: only after linger_s (2 ms) or when the next call
is *expected* to be slow, by the running mean of its function (cycle.py:126-132,
worker/pace.py:29-38). A function whose mean is fast but that is sometimes slow (a cache
miss, a lock, a GC pause) holds back every result pending before it for as long as it runs.

README "A result is answered as soon as its call is done, not when other calls of the same
delivery are."
"""

from __future__ import annotations

import time
from typing import Any

from droplet.proto import envelope, pb
from droplet.store import serializer
from tests.unit.inprocess import Fleet

SEEN: dict[str, Any] = {}


def lookup(lib: Any, x: Any) -> Any:
    if x == "miss":  # now and then this one is slow
        time.sleep(0.2)  # (the worker commits what is done within a few tens of ms)
        SEEN["first answered before the slow run"] = SEEN["fleet"].stored(SEEN["first"])
        time.sleep(0.1)
    return x


def test_a_quick_result_is_not_held_back_by_a_slow_run_that_follows_it() -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    fleet.register("lookup", lookup)
    warm = [fleet.call("lookup", i) for i in range(20)]  # the worker learns: lookup is quick
    fleet.run_until_quiet()
    assert all(fleet.stored(c) is not None for c in warm)

    calls = []
    for arg in (1, "miss"):
        call = pb.FunctionCall(name="lookup", call_id=f"c-{arg}", response_key=f"c-{arg}",
                               response_address=fleet.reply_to)
        serializer.dump(arg, call.arguments.values.add())
        calls.append(pb.Message(call=call))
    SEEN.update(fleet=fleet, first="c-1")
    fleet.client.publish(fleet.names.work, envelope.encode(calls, fleet.signer),
                         reply_to=fleet.reply_to)  # a client's batch: one envelope
    fleet.run_until_quiet()

    assert fleet.stored("c-1") == 1 and fleet.stored("c-miss") == "miss"
    assert SEEN["first answered before the slow run"] == 1, (
        "the quick call's outcome waited for the slow run of the next call")
