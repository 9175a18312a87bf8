"""Delayed calls (call_later / call_at): the due time travels in the call, the wait happens in
the broker.

The client sends the call, with `due_at_ms`, to the schedulers. A scheduler that gets a call not
due yet puts it in the longest power-of-two delay queue (`<ns>.retry.<N>ms`) that does not pass
its due time; the queue's TTL dead-letters it back to the schedulers when that wait is over, and
so on: any delay up to a day is a chain of at most 27 waits, through a fixed set of at most 27
queues, and no process polls or holds it meanwhile (scheduler/delays.py). The queues are durable
and the messages persistent, so delayed calls survive restarts of RabbitMQ, schedulers and
workers; a wait cut short or drawn out (a restart) is corrected at the next hop, since the due
time, not the remaining wait, is what travels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from droplet.errors import InvalidArgumentError
from droplet.priority import checked_priority
from droplet.proto import envelope, pb

if TYPE_CHECKING:
    from droplet.client.client import DropletClient


def due_at_s(max_delay_s: float, delay_s: float | None = None,
             at: datetime | float | None = None) -> float:
    """The unix time a delayed call is due, from a delay or a point in time; refused when
    negative, not a number, or beyond max_delay_s."""
    now = time.time()
    if at is not None:
        if isinstance(at, datetime):
            due = at.timestamp()
        elif isinstance(at, int | float) and not isinstance(at, bool):
            due = float(at)
        else:
            raise InvalidArgumentError(f"call_at takes a datetime or a unix time, not {at!r}")
        if not math.isfinite(due):
            raise InvalidArgumentError(f"call_at: {at!r} is not a time")
        delay = max(0.0, due - now)
    else:
        if isinstance(delay_s, bool) or not isinstance(delay_s, int | float):
            raise InvalidArgumentError(f"a delay is a number of seconds, not {delay_s!r}")
        if not math.isfinite(delay_s) or delay_s < 0:
            raise InvalidArgumentError(f"a delay is a finite number of seconds >= 0, "
                                       f"not {delay_s!r}")
        delay = float(delay_s)
        due = now + delay
    if delay > max_delay_s:
        raise InvalidArgumentError(
            f"a delay of {delay:.0f}s is beyond max_delay_s ({max_delay_s:g}s): call nearer "
            "the time, or raise max_delay_s (DROPLET_MAX_DELAY_S) for clients and schedulers")
    return max(due, now)


def delayed_call(client: DropletClient, name: str, args: Sequence[Any], delay_s: float | None,
                 at: datetime | float | None, priority: int) -> tuple[pb.FunctionCall, float]:
    """The call, carrying its due time, and that time (unix s)."""
    due = due_at_s(client.settings.max_delay_s, delay_s, at)
    call = client._function_call(name, args)
    call.priority = checked_priority(priority, client.settings.max_priority)
    call.due_at_ms = max(1, int(due * 1000))
    return call, due


def send_delayed(client: DropletClient, call: pb.FunctionCall) -> None:
    """To the schedulers, which hold it in the delay queues until it is due."""
    body = envelope.encode([pb.Message(call=call)], client.signer)
    client.pump.send(client.names.calls, body, [call.call_id], priority=call.priority)
