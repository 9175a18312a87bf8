"""Seed behaviours of the scheduler's call_function, driven directly (no broker)."""

from __future__ import annotations

from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.scheduler import calls
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.store.serializer import DropletReference

from .helpers import NAMES, function_call, scheduler_state, stored, worker_status


def test_call_function_no_refs_goes_to_the_shared_work_queue() -> None:
    state = scheduler_state("w1")
    out = Outbox()
    call = function_call("function", [2])

    response = calls.call_function(call, "reply-addr", state, out)

    assert response.success
    assert len(out.sent) == 1, "the call is forwarded and the client needs no answer"
    forwarded = out.sent[0].message.call
    assert out.sent[0].queue == NAMES.work
    assert forwarded.name == "function"
    assert forwarded.request_id == 12
    assert response.response_id == forwarded.response_key == "resp-key"
    assert forwarded.response_address == "reply-addr"
    assert serializer.load(forwarded.arguments.values[0]) == 2


def test_call_without_response_key_gets_one_and_is_told_it() -> None:
    state = scheduler_state("w1")
    out = Outbox()
    call = pb.FunctionCall(name="function", request_id=3)

    response = calls.call_function(call, "reply-addr", state, out)

    forwarded = out.messages_to(NAMES.work)[0].call
    assert forwarded.response_key, "a response key is assigned"
    replies = out.responses_to("reply-addr")
    assert len(replies) == 1
    assert replies[0].response_id == forwarded.response_key == response.response_id


def test_call_function_with_refs_prefers_the_worker_caching_them() -> None:
    state = scheduler_state("w1", "w3")
    state.workers["w2"] = worker_status("w2", cached=["reference"])
    out = Outbox()
    call = function_call("function", [DropletReference("reference")])

    response = calls.call_function(call, None, state, out)

    assert response.success
    assert [o.queue for o in out.sent] == [NAMES.worker("w2")]
    assert out.sent[0].message.call.response_key == response.response_id


def test_refs_cached_nowhere_use_the_shared_queue() -> None:
    state = scheduler_state("w1")
    out = Outbox()
    calls.call_function(function_call("f", [DropletReference("nobody-has-it")]), None, state, out)
    assert [o.queue for o in out.sent] == [NAMES.work]


def test_function_call_no_resources() -> None:
    state = scheduler_state()  # no worker alive
    kv = MemoryKV()
    out = Outbox()

    response = calls.call_function(function_call("function", [2]), "reply-addr", state, out)

    assert not response.success
    assert response.error == pb.NO_RESOURCES
    assert out.messages_to(NAMES.work) == []
    replies = out.responses_to("reply-addr")
    assert len(replies) == 1 and replies[0].error == pb.NO_RESOURCES
    # The error is the call's stored outcome, so a future reading the store sees it.
    from .helpers import commit

    commit(kv, out)
    result = stored(kv, "resp-key")
    assert isinstance(result, pb.ErrorInfo) and result.code == pb.NO_RESOURCES


def test_a_worker_in_backoff_takes_no_locality_placement_but_calls_still_queue() -> None:
    state = scheduler_state()
    state.workers["w1"] = worker_status("w1", cached=["k"])
    state.backoff.add("w1")
    out = Outbox()
    response = calls.call_function(function_call("f", [DropletReference("k")]), None, state, out)
    assert response.success
    assert [o.queue for o in out.sent] == [NAMES.work]
