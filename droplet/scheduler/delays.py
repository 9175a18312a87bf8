"""Delayed calls on their way through the schedulers (client/delays.py says why so).

A call whose due time has not come goes to the longest power-of-two delay queue that does not
pass it; the queue sends it back here when that wait is over. A call that has come due is
placed like any other, once: the first copy to come due records `fired/<call id>` in the same
etcd transaction that lets it go on, so copies of it (the client re-sent it after a reconnect)
that come due after are dropped. A call that comes due while no live worker can take it
waits for one (tried again every REROUTE_DELAY_MS) for REROUTE_DEADLINE_S before it is
answered NO_RESOURCES. A copy that the broker redelivers (this scheduler, or another,
died between recording it and the forward being confirmed) goes on regardless; it is marked
`maybe_done`, so a worker that finds the call's outcome stored (it ran, or was cancelled)
answers that instead of running it. Such a copy that waits for a worker is parked marked
`maybe_done` too, and goes on the same way when the delay queue hands it back: it is no
redelivery then, and would meet the marker its own first copy recorded and be dropped.
"""

from __future__ import annotations

import time

from droplet.broker_config.names import delay_bucket_ms
from droplet.outbox import Outbox, deliver
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.scheduler.calls import call_function
from droplet.scheduler.dags import REROUTE_DEADLINE_S, REROUTE_DELAY_MS
from droplet.scheduler.state import SchedulerState
from droplet.store.commits import Commit
from droplet.store.keys import StoreKeys

# Clocks of clients and schedulers differ a little: a due time this far past max_delay_s is
# still taken.
_CLOCK_SLACK_MS = 60_000


def route_delayed(call: pb.FunctionCall, reply_to: str | None, state: SchedulerState,
                  out: Outbox, keys: StoreKeys, *, redelivered: bool, max_delay_s: float,
                  now_ms: int | None = None) -> bool:
    """Handles a delayed call (True), or leaves a call that is not delayed (False)."""
    if not call.due_at_ms:
        return False
    if reply_to:
        call.response_address = reply_to  # later hops come from a delay queue
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    redelivered = redelivered or call.maybe_done  # parked below after a redelivery
    remaining_ms = call.due_at_ms - now_ms
    call_id = call.call_id or call.response_key
    if remaining_ms > max_delay_s * 1000 + _CLOCK_SLACK_MS:
        deliver(out, call_id=call_id, response_id=call.response_key or call_id,
                value=error_value(pb.INVALID_REQUEST, f"a call due in {remaining_ms} ms is "
                                  f"beyond max_delay_s ({max_delay_s:g}s)"),
                address=call.response_address, store=True)
        return True
    if remaining_ms >= 1:
        out.send(state.names.retry(delay_bucket_ms(remaining_ms)), pb.Message(call=call))
        return True
    due = pb.FunctionCall()
    due.CopyFrom(call)
    due.due_at_ms = 0  # placed from here on like any call (a dead worker's queue, ...)
    placed = Outbox()
    answer = call_function(due, None, state, placed, maybe_done=True)
    if answer.error == pb.NO_RESOURCES and -remaining_ms < REROUTE_DEADLINE_S * 1000:
        # No live worker can take it at this moment (its worker is being restarted): it
        # was accepted while one could, so it waits for one as a DAG step does, then fails.
        call.maybe_done = redelivered
        out.send(state.names.retry(REROUTE_DELAY_MS), pb.Message(call=call))
        return True
    if redelivered:
        out.extend(placed)
        return True
    marker = keys.fired_call(call_id)
    out.store(Commit(records={marker: b"1"}, absent=marker), then=placed.sent)
    out.durable += placed.durable
    out.replies += placed.replies
    return True
