"""Seed behaviours of the worker: executing calls and the pin protocol, driven directly."""

from __future__ import annotations

from typing import Any

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.commits import Status
from droplet.store.memory import MemoryKV
from droplet.store.serializer import DropletReference
from droplet.store.values import ValueStore
from droplet.worker import handlers

from .helpers import (
    SETTINGS,
    commit,
    create_function,
    function_call,
    metadata,
    stored,
    worker_state,
)


def run_call(kv: MemoryKV, call: pb.FunctionCall) -> Outbox:
    out = Outbox()
    handlers.exec_function(call, worker_state(kv), out)
    commit(kv, out)
    return out


def test_exec_function_nonexistent_stores_func_not_found_and_sends_nothing() -> None:
    kv = MemoryKV()
    out = run_call(kv, function_call("bad_func", [1]))

    assert out.sent == []
    result = stored(kv, "resp-key")
    assert isinstance(result, pb.ErrorInfo)
    assert result.code == pb.FUNC_NOT_FOUND


def test_exec_function_with_error_stores_execution_error_with_message() -> None:
    kv = MemoryKV()
    e_msg = "This is a broken_function!"

    def func(_: Any, x: Any) -> None:
        raise ValueError(e_msg)

    create_function(metadata(kv), func, "func")
    run_call(kv, function_call("func", [""]))

    result = stored(kv, "resp-key")
    assert isinstance(result, pb.ErrorInfo)
    assert result.code == pb.EXECUTION_ERROR
    assert e_msg in result.message
    assert "ValueError" in result.traceback


def test_exec_function_replies_and_stores_the_result() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    call = function_call("incr", [1])
    call.response_address = "client-addr"

    out = run_call(kv, call)

    assert stored(kv, "resp-key") == 2
    [reply] = out.responses_to("client-addr")
    assert reply.success and reply.call_id == "resp-key"
    assert serializer.load(reply.value) == 2


def test_direct_response_is_not_stored() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    call = function_call("incr", [1])
    call.response_address = "client-addr"
    call.direct_response = True
    out = run_call(kv, call)
    assert stored(kv, "resp-key") is None
    assert len(out.responses_to("client-addr")) == 1


def test_references_are_resolved_from_the_store() -> None:
    kv = MemoryKV()
    ValueStore(kv, SETTINGS).put("k", 41)
    create_function(metadata(kv), lambda _, x, y: (x, y), "pair")
    run_call(kv, function_call("pair", [DropletReference("k"), DropletReference("missing")]))
    assert stored(kv, "resp-key") == (41, None)


def test_a_class_is_built_once_and_its_run_method_called() -> None:
    kv = MemoryKV()

    class Counter:
        built = 0

        def __init__(self, step: int) -> None:
            Counter.built += 1
            self.step = step
            self.total = 0

        def run(self, _lib: Any, x: int) -> int:
            self.total += x * self.step
            return self.total

    md = metadata(kv)
    import cloudpickle

    spec = pb.Function(name="counter", body=cloudpickle.dumps(Counter), is_class=True)
    serializer.dump(10, spec.init_args.values.add())
    md.put_function(spec)
    state = worker_state(kv)
    for i in range(3):
        handlers.exec_function(function_call("counter", [1], f"k{i}"), state, Outbox())
    out = Outbox()
    value = handlers.exec_function(function_call("counter", [1], "k9"), state, out)
    assert serializer.load(value) == 40, "one instance kept its state across calls"


def test_the_user_library_reaches_the_store_and_knows_its_worker() -> None:
    kv = MemoryKV()

    def func(lib: Any, key: str) -> tuple[str, Any, Any]:
        lib.put(key, "v")
        return lib.getid(), lib.get(key), lib.get("nothing-here")

    create_function(metadata(kv), func, "libuser")
    run_call(kv, function_call("libuser", ["mykey"]))
    assert stored(kv, "resp-key") == ("w1", "v", None)
    assert stored(kv, "mykey") == "v"


def _pin_request(kv: MemoryKV, fname: str, worker_id: str = "w1") -> pb.PinRequest:
    assert metadata(kv).claim_pin(worker_id, "dag", fname)
    return pb.PinRequest(dag_name="dag", function_name=fname)


def test_successful_pin_records_metadata_and_answers_success() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x + 1, "incr")
    state = worker_state(kv)
    out = Outbox()

    accepted = handlers.pin(_pin_request(kv, "incr"), "sched-addr", "corr", state, out)

    assert accepted
    assert state.pinned == ("dag", "incr")
    assert "incr" in state.functions
    [reply] = out.replies
    assert reply.address == "sched-addr" and reply.correlation_id == "corr"
    assert reply.response.success
    fn = state.functions.get("incr")
    assert fn is not None and fn.run("", 1) == 2


def test_occupied_worker_rejects_a_pin_without_touching_its_state() -> None:
    kv = MemoryKV()
    md = metadata(kv)
    create_function(md, lambda _, x: x + 1, "incr")
    state = worker_state(kv)
    state.pinned = ("other", "square")
    request = pb.PinRequest(dag_name="dag", function_name="incr")
    out = Outbox()

    accepted = handlers.pin(request, "sched-addr", "corr", state, out)

    assert not accepted
    assert state.pinned == ("other", "square")
    assert "incr" not in state.functions
    assert not out.replies[0].response.success


def test_a_pin_no_scheduler_recorded_is_rejected() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x, "f")
    state = worker_state(kv)
    out = Outbox()
    assert not handlers.pin(pb.PinRequest(dag_name="dag", function_name="f"), "a", "c", state, out)
    assert state.pinned is None


def test_unpin_frees_the_worker() -> None:
    kv = MemoryKV()
    state = worker_state(kv)
    state.pinned = ("dag", "f")
    assert not handlers.unpin(pb.UnpinRequest(dag_name="dag", function_name="g"), state)
    assert handlers.unpin(pb.UnpinRequest(dag_name="dag", function_name="f"), state)
    assert state.pinned is None


def test_a_raw_reference_passes_the_stored_bytes() -> None:
    import pickle

    kv = MemoryKV()
    ValueStore(kv, SETTINGS).put("k", {"a": 1})
    create_function(metadata(kv), lambda _, raw: (type(raw).__name__, pickle.loads(raw)), "raw")
    run_call(kv, function_call("raw", [DropletReference("k", deserialize=False)]))
    assert stored(kv, "resp-key") == ("bytes", {"a": 1})


def test_a_call_that_may_have_run_is_answered_from_its_stored_result() -> None:
    kv = MemoryKV()
    create_function(metadata(kv), lambda _, x: x * 2, "double")
    state = worker_state(kv)
    first = Outbox()
    handlers.exec_function(function_call("double", [21]), state, first)
    commit(kv, first)

    again = function_call("double", [21])
    again.maybe_done = True
    again.response_address = "client"
    out = Outbox()
    value = handlers.exec_function(again, state, out)

    assert serializer.load(value) == 42
    assert out.durable == [], "nothing stored twice"
    assert serializer.load(out.responses_to("client")[0].value) == 42
    redelivered = Outbox()
    handlers.exec_function(function_call("double", [21]), state, redelivered, redelivered=True)
    assert redelivered.durable == []
    assert state.calls_total == 1, "it ran once"


def test_a_second_run_that_loses_the_write_once_race_answers_the_first_outcome() -> None:
    """Two runs of one call (a duplicate no lookup caught): the stored outcome is the first
    one, and the second run's reply carries the first outcome, not its own."""
    kv = MemoryKV()
    counter = iter(range(100))
    create_function(metadata(kv), lambda _, x: x + next(counter), "drifting")
    state = worker_state(kv)
    first, second = Outbox(), Outbox()
    call = function_call("drifting", [10])
    call.response_address = "client"
    handlers.exec_function(call, state, first)
    handlers.exec_function(call, state, second)
    [won] = commit(kv, first)
    [lost] = commit(kv, second)
    assert won.status is Status.DONE and lost.status is Status.DUPLICATE
    assert lost.existing is not None and serializer.load(lost.existing) == 10
    assert stored(kv, "resp-key") == 10
