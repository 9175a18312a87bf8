"""Attack on issue 14 part 1b (speculative DAG functions, chains, list, get_function) with
hostile input, without a broker. Each test failed before its fix:

* copies=2**32 escaped as a bare ValueError from protobuf instead of InvalidArgumentError;
* a name with a trailing newline ("f\\n") passed the name check (`$` matches before "\\n"),
  so get_function("f\\n") asked the store instead of refusing the name;
* client.list(prefix=5) raised TypeError from str.startswith;
* arguments for a function the DAG does not have (a misspelt name, or a continuation's arg_map
  meant for another DAG) were dropped without a word and the function ran without them;
* a copy's result whose `__eq__` (or unpickling) never returns held the worker forever:
  comparing with invalid_results ran outside the function's time limit, where no cancel
  reaches.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from droplet.client.checks import checked_name
from droplet.client.client import DropletClient
from droplet.client.dagspecs import MAX_COPIES, dag_functions
from droplet.errors import InvalidArgumentError
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import dags as scheduler_dags
from droplet.store import serializer
from droplet.worker import copies
from tests.unit.helpers import linear_dag, scheduler_state

pytestmark = pytest.mark.timeout(60)


def test_copies_beyond_what_the_message_holds_are_refused_as_invalid_arguments() -> None:
    for bad in (MAX_COPIES + 1, 10**30):
        with pytest.raises(InvalidArgumentError, match="copies"):
            dag_functions([("f", [None], bad)], 2)
    _, [spec] = dag_functions([("f", [None], MAX_COPIES)], 2)
    assert spec.copies == MAX_COPIES


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    for bad in ("f\n", "f\r\n", "\nf"):
        with pytest.raises(InvalidArgumentError):
            checked_name("function", bad)
    assert checked_name("function", "f-1.a:b_c") == "f-1.a:b_c"


def test_list_refuses_a_prefix_that_is_not_a_string() -> None:
    fake: Any = SimpleNamespace(metadata=SimpleNamespace(function_names=lambda: ["b", "a"]),
                                ensure_open=lambda: None)
    for bad in (5, b"a", ["a"]):
        with pytest.raises(InvalidArgumentError, match="prefix"):
            DropletClient.list(fake, bad)
    assert DropletClient.list(fake, None) == ["a", "b"]
    assert DropletClient.list(fake, "a") == ["a"]


def _call_with_args_for(function: str, **fields: Any) -> tuple[pb.GenericResponse, Outbox]:
    state = scheduler_state("w-a")
    state.dags["d"] = pb.DagRecord(dag=linear_dag("d", ["a"]), ready=True)
    state.pins["w-a"] = pb.PinRecord(dag_name="d", function_name="a", worker_id="w-a")
    call = pb.DagCall(name="d", call_id="c", response_address="client", **fields)
    serializer.dump(1, call.function_args[function].values.add())
    out = Outbox()
    return scheduler_dags.call_dag(call, None, state, out), out


def test_arguments_for_a_function_the_dag_does_not_have_fail_the_call_clearly() -> None:
    # A chained call (what a finished DAG sends the scheduler) is checked the same way.
    for fields in ({}, {"chained_input": serializer.dump(3)}):
        response, out = _call_with_args_for("typo", **fields)
        assert response.error == pb.INVALID_REQUEST
        assert "typo" in pb.ErrorInfo.FromString(out.outcomes()[0].value.body).message
        assert not [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    response, out = _call_with_args_for("a")
    assert response.success
    assert [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]


class EqualsForever:
    def __eq__(self, other: object) -> bool:
        while True:
            pass

    __hash__ = object.__hash__


class LoadsForever:
    def __init__(self) -> None:
        self.state = 1  # so that unpickling calls __setstate__

    def __setstate__(self, state: object) -> None:
        while True:
            pass


def test_comparing_a_result_that_never_finishes_comparing_does_not_hold_the_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copies, "COMPARE_LIMIT_S", 0.3)
    spec = pb.Speculative(function="f", copies=2)
    serializer.dump(None, spec.invalid_results.add())
    started = time.monotonic()
    assert copies.is_valid(spec, serializer.dump(EqualsForever())), \
        "a comparison that does not finish is 'not equal', as one that raises"
    unloadable = serializer.dump(LoadsForever())
    assert not copies.is_valid(spec, unloadable), "a result that cannot be loaded loses"
    assert time.monotonic() - started < 30
    assert copies.is_valid(spec, serializer.dump(1))
    assert not copies.is_valid(spec, serializer.dump(None))


def test_a_chained_result_that_would_make_the_next_dags_messages_too_large_fails_the_call(
) -> None:
    """Each source of the next DAG gets the previous result in the schedule, which every
    trigger carries (e2e: tests/attack/test_e2e_chain_over_broker_limit.py)."""
    state = scheduler_state("w-a", "w-b", "w-c")
    # (envelope.SCHEDULE_ROOM_BYTES, 2 KiB, is kept for the rest of each message: ~950 left)
    state.max_message_bytes = 3000
    state.dags["d"] = pb.DagRecord(dag=pb.Dag(name="d", functions=["a", "b", "c"]), ready=True)
    for f in "abc":
        state.pins[f"w-{f}"] = pb.PinRecord(dag_name="d", function_name=f, worker_id=f"w-{f}")

    def chained(size: int) -> tuple[pb.GenericResponse, Outbox]:
        call = pb.DagCall(name="d", call_id="c", response_address="client")
        call.chained_input.CopyFrom(serializer.dump(b"x" * size))
        out = Outbox()
        return scheduler_dags.call_dag(call, None, state, out), out

    response, out = chained(400)
    assert response.error == pb.INVALID_REQUEST and "max_message_bytes" in response.message
    assert "max_message_bytes" in pb.ErrorInfo.FromString(out.outcomes()[0].value.body).message
    assert not [o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]
    response, out = chained(100)
    assert response.success
    assert len([o for o in out.sent if o.message.WhichOneof("kind") == "trigger"]) == 3


def test_a_dag_too_large_to_store_is_malformed() -> None:
    """e2e (the scheduler looped on it, every admin request timing out):
    tests/attack/test_e2e_dag_too_large.py."""
    from droplet.graph import shape_error
    from droplet.speculation import MAX_DAG_BYTES

    dag = pb.Dag(name="d", functions=["f"])
    spec = dag.speculative.add(function="f", copies=2)
    serializer.dump(b"x" * 100, spec.invalid_results.add())
    assert shape_error(dag) is None
    serializer.dump(b"x" * MAX_DAG_BYTES, spec.invalid_results.add())
    assert "invalid_results" in (shape_error(dag) or "")


# -- race records of large results (e2e: tests/attack/test_e2e_speculative_big_result.py) --

BIG = 2_000_000  # over what one etcd transaction takes (commits.MAX_TXN_BYTES)


def test_a_winner_too_large_for_its_race_record_still_wins_and_sends_its_result_once() -> None:
    from droplet.store.commits import Committer, Status
    from droplet.store.values import ValueStore
    from tests.unit.helpers import NAMES, SETTINGS, worker_state
    from tests.unit.test_speculative import (
        _kv_with,
        copy_trigger,
        handle,
        schedule_of,
        settle,
        speculative_dag,
    )

    kv = _kv_with(lambda lib, x: b"y" * BIG)
    schedule = schedule_of(speculative_dag(), ["w-1"])
    winner = worker_state(kv, "w-spec")
    out = handle(kv, winner, copy_trigger(schedule, 0))
    committer = Committer(ValueStore(kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    assert all(committer.apply(item.commit).status is Status.DONE for item in out.durable), \
        "the win fits in one etcd transaction"
    after = NAMES.worker("w-after")
    sent = [o for item in out.durable for o in item.then] + out.sent
    assert [len(serializer.load(o.message.trigger.result)) for o in sent
            if o.queue == after] == [BIG]
    # A redelivered winner: its record has no result, so it runs again and sends it on.
    again, _ = settle(kv, handle(kv, winner, copy_trigger(schedule, 0)))
    assert [len(serializer.load(o.message.trigger.result)) for o in again
            if o.queue == after] == [BIG]
    # The other copy, later, finds the race decided and sends nothing.
    late, _ = settle(kv, handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 1)))
    assert late == []


def test_losing_copies_with_large_results_or_errors_record_their_loss_and_fail_the_call() -> (
        None):
    from tests.unit.helpers import worker_state
    from tests.unit.test_speculative import (
        _kv_with,
        copy_trigger,
        handle,
        schedule_of,
        settle,
        speculative_dag,
    )

    def big_or_raise(lib: Any, x: int) -> Any:
        if lib.getid() == "w-1":
            raise ValueError("e" * BIG)
        return b"bad" * (BIG // 3)

    kv = _kv_with(big_or_raise)
    schedule = schedule_of(speculative_dag(invalid=[b"bad" * (BIG // 3)], final=True), ["w-1"])
    _, first = settle(kv, handle(kv, worker_state(kv, "w-spec"), copy_trigger(schedule, 0)))
    _, second = settle(kv, handle(kv, worker_state(kv, "w-1"), copy_trigger(schedule, 1)))
    [answer] = first + second
    assert answer.value.type == pb.ERROR
    info = pb.ErrorInfo.FromString(answer.value.body)
    assert "ValueError" in info.message and len(answer.value.body) < BIG
