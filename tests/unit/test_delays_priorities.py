"""Delayed calls and priorities without a broker: the scheduler's handling of a due time, the
delay buckets, priority checks, and the stub broker's priority order."""

from __future__ import annotations

import math
from typing import Any

import pytest

from droplet.broker.interface import QueueSpec, Topology
from droplet.broker.stub import StubBroker
from droplet.broker_config.names import delay_bucket_ms
from droplet.errors import InvalidArgumentError
from droplet.outbox import Outbox
from droplet.priority import checked_priority
from droplet.proto import pb
from droplet.scheduler.dags import REROUTE_DEADLINE_S, REROUTE_DELAY_MS
from droplet.scheduler.delays import route_delayed
from droplet.store.commits import Status
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV

from .helpers import NAMES, SETTINGS, commit, function_call, scheduler_state

KEYS = StoreKeys(SETTINGS.etcd_prefix)
NOW_MS = 1_700_000_000_000


def _route(call: pb.FunctionCall, redelivered: bool = False) -> tuple[bool, Outbox]:
    out = Outbox()
    handled = route_delayed(call, "reply-addr", scheduler_state("w1"), out, KEYS,
                            redelivered=redelivered, max_delay_s=86400.0, now_ms=NOW_MS)
    return handled, out


def test_a_call_not_delayed_is_left_alone() -> None:
    handled, out = _route(function_call("f", [1]))
    assert not handled and out.empty()


@pytest.mark.parametrize(("remaining_ms", "bucket_ms"), [
    (1, 1), (2, 2), (3, 2), (1000, 512), (1024, 1024), (86_400_000, 67_108_864)])
def test_a_call_not_due_waits_in_the_longest_bucket_within_its_due_time(
        remaining_ms: int, bucket_ms: int) -> None:
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS + remaining_ms
    handled, out = _route(call)
    assert handled and [o.queue for o in out.sent] == [NAMES.retry(bucket_ms)]
    assert out.sent[0].message.call.due_at_ms == call.due_at_ms, "the due time travels"
    assert out.sent[0].message.call.response_address == "reply-addr"
    assert delay_bucket_ms(remaining_ms) == bucket_ms


def test_a_due_call_is_placed_once_marked_maybe_done() -> None:
    kv = MemoryKV()
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS
    handled, out = _route(call)
    assert handled and not out.sent
    [first] = commit(kv, out)
    forwarded = out.durable[0].then
    assert first.status is Status.DONE and [o.queue for o in forwarded] == [NAMES.work]
    placed = forwarded[0].message.call
    assert placed.maybe_done and placed.due_at_ms == 0
    copy = function_call("f", [1])
    copy.due_at_ms = NOW_MS - 5  # a re-sent copy comes due too
    _, again = _route(copy)
    [second] = commit(kv, again)
    assert second.status is Status.TAKEN, "a second copy is dropped"


def test_a_redelivered_due_call_goes_on_without_the_marker() -> None:
    """Its scheduler may have died after recording it and before forwarding it."""
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS
    handled, out = _route(call, redelivered=True)
    assert handled and not out.durable
    assert [o.queue for o in out.sent] == [NAMES.work] and out.sent[0].message.call.maybe_done


def test_a_call_due_while_no_worker_is_alive_waits_for_one_then_fails() -> None:
    """Its worker is being restarted: the call was accepted while one could run it, so it
    waits as a DAG step does rather than fail for good at once
    (tests/attack/test_e2e_delayed_call_due_while_its_worker_restarts.py)."""
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS - 1000
    out = Outbox()
    assert route_delayed(call, "reply-addr", scheduler_state(), out, KEYS, redelivered=False,
                         max_delay_s=86400.0, now_ms=NOW_MS)
    assert not out.durable and not out.outcomes(), "neither fired nor failed"
    [waiting] = out.sent
    assert waiting.queue == NAMES.retry(REROUTE_DELAY_MS)
    parked = waiting.message.call
    assert parked.due_at_ms == call.due_at_ms and parked.response_address == "reply-addr"
    assert not parked.trace, "nothing of the attempt is kept"

    late = Outbox()
    deadline_ms = call.due_at_ms + int(REROUTE_DEADLINE_S * 1000)
    assert route_delayed(parked, None, scheduler_state(), late, KEYS, redelivered=False,
                         max_delay_s=86400.0, now_ms=deadline_ms)
    [outcome] = late.outcomes()
    assert pb.ErrorInfo.FromString(outcome.value.body).code == pb.NO_RESOURCES


def test_a_due_time_beyond_max_delay_fails_the_call() -> None:
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS + 10 * 86_400_000
    handled, out = _route(call)
    assert handled and not out.sent
    [outcome] = out.outcomes()
    assert pb.ErrorInfo.FromString(outcome.value.body).code == pb.INVALID_REQUEST


@pytest.mark.parametrize("bad", [-1, 10, 2**63, 1.5, math.nan, math.inf, "1", None, True])
def test_priorities_outside_the_range_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        checked_priority(bad, 9)


def test_priorities_in_range_are_kept() -> None:
    assert [checked_priority(p, 9) for p in (0, 9, 5.0)] == [0, 9, 5]


def test_the_stub_broker_orders_a_priority_queue_like_rabbitmq() -> None:
    broker = StubBroker()
    conn = broker.connect()
    conn.declare(Topology(queues=[QueueSpec("p", arguments={"x-max-priority": 5}),
                                  QueueSpec("fifo")]))
    for queue in ("p", "fifo"):
        for body, priority in ((b"a", 0), (b"b", 3), (b"c", 9), (b"d", 3)):
            conn.publish(queue, body, priority=priority)
    order = {}
    for queue in ("p", "fifo"):
        taken = []
        while (delivery := conn.get(queue)) is not None:
            taken.append(delivery.body)
        order[queue] = taken
    assert order["p"] == [b"c", b"b", b"d", b"a"], "above the maximum counts as the maximum"
    assert order["fifo"] == [b"a", b"b", b"c", b"d"]


def test_a_delay_beyond_max_delay_is_refused_saying_what_to_do() -> None:
    # README's call_at example once named 2030; the refusal named the limit, not the remedy.
    from droplet.client.delays import due_at_s

    with pytest.raises(InvalidArgumentError, match=r"beyond max_delay_s \(86400s\): call "
                       r"nearer the time, or raise max_delay_s \(DROPLET_MAX_DELAY_S\)"):
        due_at_s(86400.0, 2 * 86400.0, None)
    assert due_at_s(86400.0, 10.0, None) > 0
