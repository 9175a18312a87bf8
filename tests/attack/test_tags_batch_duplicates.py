"""Attacks on batching functions and resource tags: the same call delivered twice (not marked
as a copy that may have run) has one outcome and runs once; needs too large for a float are
refused with a clear error."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import cloudpickle
import pytest

from droplet import resources
from droplet.client.tagging import checked_needs
from droplet.errors import InvalidArgumentError
from droplet.proto import envelope, pb
from droplet.store import serializer
from droplet.store.metadata import Metadata
from tests.unit.inprocess import Fleet
from tests.unit.test_inprocess_faults import assert_one_outcome_each

RUNS: Counter[int] = Counter()
TICKS = itertools.count()


def stamped(lib: Any, batch: list[tuple[int]]) -> list[tuple[int, int]]:
    """Each result differs from any earlier run's: a second run shows as a second outcome."""
    out = []
    for (x,) in batch:
        RUNS[x] += 1
        out.append((x, next(TICKS)))
    return out


def _fleet() -> Fleet:
    RUNS.clear()
    fleet = Fleet()
    fleet.start_worker("w1")
    Metadata(fleet.kv, fleet.settings, fleet.signer).put_function(pb.Function(
        name="b", body=cloudpickle.dumps(stamped), batching=True, batch_size=8,
        batch_linger_s=0.001))
    fleet.workers["w1"].service.state.batching.add("b")
    return fleet


def _send_twice(fleet: Fleet, x: int, direct: bool) -> str:
    call = pb.FunctionCall(name="b", call_id=f"dup-{x}", response_key=f"dup-{x}",
                           response_address=fleet.reply_to, direct_response=direct)
    serializer.dump(x, call.arguments.values.add())
    body = envelope.encode([pb.Message(call=call)], fleet.signer)
    for _ in range(2):
        fleet.client.publish(fleet.names.worker("w1"), body, reply_to=fleet.reply_to)
    return call.call_id


def test_the_same_call_twice_in_one_batch_has_one_outcome() -> None:
    fleet = _fleet()
    calls = [_send_twice(fleet, x, direct=False) for x in range(3)]
    fleet.run_until_quiet()
    assert_one_outcome_each(fleet, calls)
    assert all(RUNS[x] == 1 for x in range(3)), f"a duplicate ran again: {RUNS}"


def test_the_same_direct_call_twice_in_one_batch_is_answered_the_same() -> None:
    fleet = _fleet()
    calls = [_send_twice(fleet, x, direct=True) for x in range(3)]
    fleet.run_until_quiet()
    answers = fleet.answers()
    for call_id in calls:
        assert len(set(answers[call_id])) == 1, f"two outcomes for {call_id}: {answers}"
    assert all(RUNS[x] == 1 for x in range(3)), f"a duplicate ran again: {RUNS}"


@pytest.mark.parametrize("value", [10**400, float("inf"), float("nan"), -1])
def test_a_need_too_large_for_a_float_is_refused_clearly(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="finite number >= 0"):
        checked_needs({"gpu": value})


class OwnBaseException(BaseException):
    """A function's own BaseException subclass (neither Exception nor SystemExit)."""


def raises_base(lib: Any, batch: list[tuple[int]]) -> list[int]:
    raise OwnBaseException("odd")


def test_a_batch_raising_its_own_base_exception_fails_each_call_and_the_worker_goes_on(
) -> None:
    fleet = Fleet()
    fleet.start_worker("w1")
    Metadata(fleet.kv, fleet.settings, fleet.signer).put_function(pb.Function(
        name="b", body=cloudpickle.dumps(raises_base), batching=True, batch_size=8,
        batch_linger_s=0.001))
    fleet.workers["w1"].service.state.batching.add("b")
    calls = [fleet.call("b", i, queue=fleet.names.worker("w1")) for i in range(3)]
    fleet.run_until_quiet()  # raised OwnBaseException out of the worker's loop before
    assert_one_outcome_each(fleet, calls)
    for call_id in calls:
        value = fleet.values.outcome(call_id)
        assert value is not None and value.type == pb.ERROR
        info = pb.ErrorInfo.FromString(value.body)
        assert info.code == pb.EXECUTION_ERROR and "OwnBaseException: odd" in info.message


def test_thousands_of_tags_are_refused_clearly_before_anything_starts() -> None:
    many = ",".join(f"t{i}=1" for i in range(resources.MAX_TAGS + 1))
    with pytest.raises(InvalidArgumentError, match="at most"):
        resources.parse(many)  # `droplet worker --resources`, `droplet up --tagged-worker`
    with pytest.raises(InvalidArgumentError, match="at most"):
        checked_needs({f"t{i}": 1 for i in range(5000)})
    assert len(resources.parse(",".join(f"t{i}" for i in range(resources.MAX_TAGS)))) == 64
