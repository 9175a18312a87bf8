"""Attacks on the calls that wait in the 1 s delay queue for a live worker (4c84527 for DAG
calls, ae60fea for due delayed calls), without a broker: each hop is a handler call."""

from __future__ import annotations

import math

import pytest

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import dags
from droplet.scheduler.dags import REROUTE_DEADLINE_S, REROUTE_DELAY_MS
from droplet.scheduler.delays import route_delayed
from droplet.scheduler.state import SchedulerState
from droplet.store.commits import Status
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from tests.unit.helpers import (
    NAMES,
    SETTINGS,
    RecordingPins,
    commit,
    function_call,
    linear_dag,
    metadata,
    scheduler_state,
)

KEYS = StoreKeys(SETTINGS.etcd_prefix)
NOW_MS = 1_700_000_000_000


def _hop(call: pb.FunctionCall, *workers: str, redelivered: bool, now_ms: int) -> Outbox:
    out = Outbox()
    assert route_delayed(call, None, scheduler_state(*workers), out, KEYS,
                         redelivered=redelivered, max_delay_s=86400.0, now_ms=now_ms)
    return out


def _placed(kv: MemoryKV, out: Outbox) -> list[pb.FunctionCall]:
    """The calls an outbox puts on a work queue once its commits are done."""
    sent = list(out.sent)
    for item, done in zip(out.durable, commit(kv, out), strict=True):
        if done.status is Status.DONE:
            sent += item.then
    return [o.message.call for o in sent if o.queue == NAMES.work]


def test_a_redelivered_due_call_that_waits_for_a_worker_is_still_placed() -> None:
    """A scheduler recorded `fired/<id>` and died before its forward was confirmed, while
    the worker was being restarted (a whole fleet restarted): the redelivered copy finds no
    live worker and waits. Coming back from the delay queue it is no longer a redelivery,
    so it met its own marker and was dropped: never run, never answered."""
    kv = MemoryKV()
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS
    first = _hop(call, "w1", redelivered=False, now_ms=NOW_MS)
    [fired] = commit(kv, first)  # ... and the forward is lost with its scheduler
    assert fired.status is Status.DONE

    parked = _hop(call, redelivered=True, now_ms=NOW_MS + 100)  # no live worker yet
    [waiting] = parked.sent
    assert waiting.queue == NAMES.retry(REROUTE_DELAY_MS)

    back = _hop(waiting.message.call, "w1", redelivered=False, now_ms=NOW_MS + 1200)
    [placed] = _placed(kv, back)
    assert placed.maybe_done and placed.due_at_ms == 0


def test_a_copy_waiting_for_a_worker_is_still_dropped_once_another_fired() -> None:
    """The control: a copy that was never redelivered (the client re-sent it) keeps meeting
    the marker, so the call runs once."""
    kv = MemoryKV()
    call = function_call("f", [1])
    call.due_at_ms = NOW_MS
    [waiting] = _hop(call, redelivered=False, now_ms=NOW_MS).sent
    assert _placed(kv, _hop(call, "w1", redelivered=False, now_ms=NOW_MS + 500))
    assert not _placed(kv, _hop(waiting.message.call, "w1", redelivered=False,
                                now_ms=NOW_MS + 1000))


def _dag_without_a_live_worker() -> SchedulerState:
    state = scheduler_state("w-a", "w-b")
    assert dags.create_dag(linear_dag("dag", ["a", "b"]), state, metadata(MemoryKV()),
                           RecordingPins([True, True]), lambda name: True).success
    state.workers.pop("w-b")
    return state


@pytest.mark.parametrize("since", [math.nan, math.inf, 1e12])
def test_a_dag_call_whose_wait_began_at_no_sane_time_still_gives_up(since: float) -> None:
    """unplaced_since travels in the DagCall, which whoever can publish writes (or another
    scheduler with its clock far ahead): NaN, infinity or a time far ahead never came
    REROUTE_DEADLINE_S past, so the call went round the delay queue every second for ever.
    Such a start counts as now."""
    state = _dag_without_a_live_worker()
    call = pb.DagCall(name="dag", call_id="c", response_address="addr", unplaced_since=since)
    now = 1_700_000_000.0
    out = Outbox()
    assert dags.call_dag(call, None, state, out, now=now).success
    [waiting] = out.sent
    parked = waiting.message.dag_call
    assert parked.unplaced_since == now
    late = Outbox()
    response = dags.call_dag(parked, None, state, late, now=now + REROUTE_DEADLINE_S)
    assert response.error == pb.NO_RESOURCES and not late.sent
