"""Building the answers every party sends: error values and GenericResponses.

Shared by the server side (handlers, the message cycle) and the client (which turns a reply
it cannot verify into an UNAUTHORIZED answer), so it lives with the schema.
"""

from __future__ import annotations

import time
from typing import Any

from droplet.proto import pb


def call_ref(schedule: pb.DagSchedule) -> pb.CallRef:
    """Where a DAG call's outcome goes, taken from its schedule: the worker that ends the DAG,
    the scheduler that fails it and the client that answers it from a DAG it scheduled itself
    all read the same fields."""
    return pb.CallRef(
        call_id=schedule.call_id or schedule.id,
        response_address=schedule.response_address,
        output_key=schedule.output_key,
        direct_response=schedule.direct_response, once=schedule.consistency == pb.MULTI,
    )


def stamp(trace: Any, stage: str) -> None:
    """Adds a stage's time to a traced call's stamps (nothing when it is not traced)."""
    if len(trace):
        trace.add(stage=stage, at_s=time.time())


def error_value(code: int, message: str, traceback: str = "", exception_type: str = "") -> pb.Value:
    info = pb.ErrorInfo(code=code, message=message, traceback=traceback,  # type: ignore[arg-type]
                        exception_type=exception_type)
    return pb.Value(type=pb.ERROR, body=info.SerializeToString())


def error_response(response_id: str, code: int, message: str = "", traceback: str = "",
                   call_id: str = "") -> pb.GenericResponse:
    response = pb.GenericResponse(success=False, response_id=response_id, call_id=call_id)
    response.error = code  # type: ignore[assignment]
    response.message = message
    response.value.CopyFrom(error_value(code, message, traceback))
    return response


def response_for(call_id: str, response_id: str, value: pb.Value, revision: int = 0,
                 inline_limit_bytes: int | None = None) -> pb.GenericResponse:
    """The answer carrying a call's outcome. A value over inline_limit_bytes is only
    announced (`stored`): the caller reads it from the store."""
    response = pb.GenericResponse(success=value.type != pb.ERROR, response_id=response_id,
                                  call_id=call_id, revision=revision)
    if value.type == pb.ERROR:
        info = pb.ErrorInfo()
        info.ParseFromString(value.body)
        response.error = info.code
        response.message = info.message
    if inline_limit_bytes is not None and len(value.body) > inline_limit_bytes:
        response.stored = True
    else:
        response.value.CopyFrom(value)
    return response
