"""What the fleet itself publishes stays within max_message_bytes, refused before it is sent.

Over the broker's max_message_size, RabbitMQ closes the publisher's channel after the publish
(refusing_broker.py): a worker's session ends after the step was acked, on every run of it,
and a direct call's caller waits until its timeout (attacks on the poison count, branches
attack-4 and attack-5). RabbitMQ 4 and Droplet both default to 16 MiB. So:

* a DAG step's result travels on in a trigger (with the schedule, and a MULTI call's writes so
  far), and the last step of a chained call in the next DagCall: over the limit, the call fails
  with INVALID_REQUEST naming the step (worker/dags._too_large);
* a scheduler refuses a DAG call whose schedule leaves under 2 KiB of the limit
  (scheduler/chains.oversized), and a step leaves 1 KiB for the rest of its trigger;
* a direct response over the limit is answered INVALID_REQUEST; a stored call's result that
  would not fit in its answer is only announced, and read from the store
  (prepared_answers.fitting, answer).

Each test has a case that fits beside the one that does not.
"""

from __future__ import annotations

from typing import Any

import pytest

from droplet.client.client import DropletClient
from droplet.client.dagcalls import build_dag_call
from droplet.errors import BrokerError, InvalidRequestError
from droplet.proto import envelope, pb
from droplet.store import serializer

from .inprocess import Fleet
from .refusing_broker import (
    BROKER_MAX_MESSAGE_BYTES,
    answer_to,
    drive,
    fleet_with_limit,
    pinned_pair,
    publish_call,
    refusing_broker,
)

RUNS: list[str] = []
OVER, UNDER = BROKER_MAX_MESSAGE_BYTES + 1, BROKER_MAX_MESSAGE_BYTES // 4
SIZES = pytest.mark.parametrize(("size", "fits"), [(OVER, False), (UNDER, True)])


@pytest.fixture(autouse=True)
def _refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    refusing_broker(monkeypatch)


def big(lib: Any, size: int) -> bytes:
    RUNS.append(lib.getid())
    return b"r" * size


def writer(lib: Any, size: int) -> int:
    RUNS.append(lib.getid())
    lib.put("blob", b"w" * size)
    return size


def length(lib: Any, blob: Any) -> int:
    return len(blob) if isinstance(blob, bytes) else int(blob)


def ran_once_without_faults(fleet: Fleet) -> None:
    faults = drive(fleet, 10)
    assert faults == 0, f"{faults} sessions closed by the broker, the step run {len(RUNS)} times"
    assert len(RUNS) == 1


def refused_or_answered(response: pb.GenericResponse, fits: bool, *named: str) -> None:
    if fits:
        assert response.success, response.message
    else:
        assert not response.success and response.error == pb.INVALID_REQUEST
        for word in ("max_message_bytes", *named):
            assert word in response.message, response.message


@SIZES
def test_a_step_result_over_the_limit_fails_the_call_before_it_is_sent(
        size: int, fits: bool) -> None:
    fleet = fleet_with_limit()
    pinned_pair(fleet, ("big", big), ("length", length))
    call_id = fleet.call_dag("d", {"big": [size]})
    ran_once_without_faults(fleet)
    refused_or_answered(answer_to(fleet, call_id), fits, "'big'")


@SIZES
def test_a_chained_result_over_the_limit_fails_the_call_before_it_is_sent(
        size: int, fits: bool) -> None:
    fleet = fleet_with_limit()
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    fleet.start_scheduler()
    fleet.register("big", big)
    fleet.register("length", length)
    fleet.pin(pb.Dag(name="first", functions=["big"]), {"big": "w1"})
    fleet.pin(pb.Dag(name="second", functions=["length"]), {"length": "w2"})
    call_id = fleet.call_dag("first", {"big": [size]},
                             continuations=[pb.Continuation(dag="second")])
    ran_once_without_faults(fleet)
    refused_or_answered(answer_to(fleet, call_id), fits)


@SIZES
def test_a_multi_steps_writes_over_the_limit_fail_the_call_before_they_are_sent(
        size: int, fits: bool) -> None:
    """A small result after a large write: the trigger carries the writes so far."""
    fleet = fleet_with_limit()
    pinned_pair(fleet, ("writer", writer), ("length", length))
    call_id = fleet.call_dag("d", {"writer": [size]}, consistency=pb.MULTI)
    ran_once_without_faults(fleet)
    refused_or_answered(answer_to(fleet, call_id), fits, "writes")


@SIZES
def test_a_direct_answer_over_the_limit_is_an_error_not_a_closed_session(
        size: int, fits: bool) -> None:
    fleet = fleet_with_limit()
    fleet.start_worker("w1")
    fleet.register("big", big)
    publish_call(fleet, "big", size, direct_response=True)
    ran_once_without_faults(fleet)
    response = answer_to(fleet, "c-1")
    refused_or_answered(response, fits, "direct")
    if fits:
        assert serializer.load(response.value) == b"r" * size


def test_a_stored_answer_over_the_limit_is_announced_not_an_error() -> None:
    fleet = fleet_with_limit()
    fleet.start_worker("w1")
    fleet.register("big", big)
    size = BROKER_MAX_MESSAGE_BYTES + 44 * 1024  # 300 KiB: under 1 MiB inline, over the limit
    publish_call(fleet, "big", size)
    ran_once_without_faults(fleet)
    response = answer_to(fleet, "c-1")
    assert response.success, f"stored fine, answered {pb.ErrorCode.Name(response.error)}: " \
        f"{response.message}"
    assert response.stored and not response.HasField("value")
    assert fleet.stored("c-1") == b"r" * size


def call_near_the_limit(fleet: Fleet, slack: int) -> pb.GenericResponse:
    """A DAG call the client accepts, `slack` bytes under the limit: the schedule the
    scheduler makes of it (the DAG, the locations added) is larger."""
    pinned_pair(fleet, ("big", lambda lib, blob, n: n), ("length", length))
    call = pb.DagCall(name="d", call_id="c-1", response_address=fleet.reply_to)
    serializer.dump(b"", call.function_args["big"].values.add())
    serializer.dump(1, call.function_args["big"].values.add())
    base = call.ByteSize()
    call.function_args["big"].values[0].Clear()
    serializer.dump(b"a" * (BROKER_MAX_MESSAGE_BYTES - slack - base - 8),
                    call.function_args["big"].values[0])
    assert call.ByteSize() <= BROKER_MAX_MESSAGE_BYTES - slack + 8, "what the client accepts"
    fleet.client.publish(fleet.names.calls,
                         envelope.encode([pb.Message(dag_call=call)], fleet.signer),
                         reply_to=fleet.reply_to)
    try:
        faults = drive(fleet, 10)
    except BrokerError as exc:
        pytest.fail(f"the scheduler's session was closed by the broker: {exc}")
    assert faults == 0, f"{faults} worker sessions closed by the broker"
    return answer_to(fleet, "c-1")


@pytest.mark.parametrize(("slack", "fits"), [(100, False), (2500, True)])
def test_a_schedule_over_the_limit_is_refused_by_the_scheduler_not_published(
        slack: int, fits: bool) -> None:
    """With ~2 KiB to spare every message of the call fits, and a small step result goes on
    (not blamed for the schedule's size)."""
    refused_or_answered(call_near_the_limit(fleet_with_limit(), slack), fits)


@pytest.mark.parametrize(("slack", "fits"), [(1100, False), (2500, True)])
def test_a_client_sends_a_dag_call_it_would_schedule_over_the_limit_to_the_scheduler(
        slack: int, fits: bool) -> None:
    """A client that schedules a DAG call itself (client/dagroutes.py) builds the schedule the
    scheduler would: one within 2 KiB of the limit goes to the scheduler instead, which
    refuses it, not straight to the source's worker (a channel closed for it)."""
    fleet = fleet_with_limit()
    pinned_pair(fleet, ("big", lambda lib, blob, n: n), ("length", length))
    client = DropletClient(fleet.settings, fleet.kv, fleet.broker.connect)
    sent = fleet.count_published()
    try:
        probe = build_dag_call(client, "d", {"big": [b"", 1]}, False, pb.NORMAL, None, None)
        blob = b"a" * (BROKER_MAX_MESSAGE_BYTES - slack - probe.ByteSize() - 8)
        future = client.call_dag("d", {"big": [blob, 1]})  # a future (direct ones block)
        client.pump.drive(0.01)
        assert drive(fleet, 10) == 0
        if fits:
            assert future.get(timeout=2) == 1
            assert sent[fleet.names.calls] == 0, "a call that fits goes straight to its worker"
        else:
            with pytest.raises(InvalidRequestError, match="max_message_bytes"):
                future.get(timeout=2)
            assert sent[fleet.names.calls] == 1
    finally:
        client.close()
