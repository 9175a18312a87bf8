"""Handlers for function calls and function registration."""

from __future__ import annotations

import uuid

from droplet.broker_config.names import check_name
from droplet.outbox import Outbox, deliver
from droplet.proto import pb
from droplet.proto.replies import error_response, error_value, stamp
from droplet.resources import describe
from droplet.scheduler.policy import pick_queue
from droplet.scheduler.state import SchedulerState
from droplet.scheduler.tagged import pick_tagged
from droplet.store import serializer
from droplet.store.metadata import Metadata, function_too_large


def call_function(
    call: pb.FunctionCall, reply_to: str | None, state: SchedulerState, out: Outbox,
    maybe_done: bool = False,
) -> pb.GenericResponse:
    """Places a call on a worker queue, or answers NO_RESOURCES when no worker is alive.

    The client names the response key and call id itself, so a successful placement needs no
    answer; a call that arrives without a key gets one, and is told it (seed behaviour). A call
    that may have run already (the scheduler's own delivery was redelivered, or the call comes
    back from a dead worker) is marked so, and the worker looks for its outcome first.
    """
    generated = not call.response_key
    if generated:
        call.response_key = str(uuid.uuid4())
    if not call.call_id:
        call.call_id = call.response_key
    if reply_to:
        call.response_address = reply_to
    if maybe_done:
        call.maybe_done = True
    stamp(call.trace, "scheduler")
    keys = serializer.reference_keys(call.arguments.values)
    reason = "no worker is available"
    if call.resources or call.batching:
        queue = pick_tagged(state, call.resources, keys)
        if call.resources:
            reason = f"no live worker has the resources {describe(call.resources)}"
    else:
        queue = pick_queue(state, keys)
    if queue is None:
        failure = error_value(pb.NO_RESOURCES, reason)
        deliver(out, call_id=call.call_id, response_id=call.response_key, value=failure,
                address=call.response_address, store=not call.direct_response,
                keep=call.keep_result)
        return error_response(call.response_key, pb.NO_RESOURCES, reason,
                              call_id=call.call_id)
    out.send(queue, pb.Message(call=call))
    response = pb.GenericResponse(
        success=True, response_id=call.response_key, call_id=call.call_id
    )
    if generated:
        out.reply(call.response_address, response)
    return response


def register_function(function: pb.Function, metadata: Metadata) -> pb.GenericResponse:
    try:
        check_name("function", function.name)
    except ValueError as exc:
        return error_response(function.name, pb.INVALID_REQUEST, str(exc))
    if not function.body:
        return error_response(function.name, pb.INVALID_REQUEST, "function body is empty")
    if why := function_too_large(function):
        return error_response(function.name, pb.INVALID_REQUEST, why)
    metadata.put_function(function)
    return pb.GenericResponse(success=True, response_id=function.name)
