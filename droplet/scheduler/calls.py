"""Handlers for function calls and function registration."""

from __future__ import annotations

import uuid

from droplet.broker_config.names import check_name
from droplet.outbox import Outbox, error_response
from droplet.proto import pb
from droplet.scheduler.policy import pick_queue
from droplet.scheduler.state import SchedulerState
from droplet.store import serializer
from droplet.store.metadata import Metadata
from droplet.store.values import ResultWrite


def call_function(
    call: pb.FunctionCall, reply_to: str | None, state: SchedulerState, out: Outbox
) -> pb.GenericResponse:
    """Places a call on a worker queue, or answers NO_RESOURCES when no worker is alive.

    The client names the response key and call id itself, so a successful placement needs no
    answer; a call that arrives without a key gets one, and is told it (seed behaviour).
    """
    generated = not call.response_key
    if generated:
        call.response_key = str(uuid.uuid4())
    if not call.call_id:
        call.call_id = call.response_key
    if reply_to:
        call.response_address = reply_to
    queue = pick_queue(state, serializer.reference_keys(call.arguments.values))
    if queue is None:
        response = error_response(
            call.response_key, pb.NO_RESOURCES, "no worker is available", call_id=call.call_id
        )
        out.reply(call.response_address, response)
        if not call.direct_response:
            out.store_result(ResultWrite(call.response_key, response.value, call.call_id, True))
        return response
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
    metadata.put_function(function)
    return pb.GenericResponse(success=True, response_id=function.name)
