"""The outbound port of every handler: what it wants sent and stored, nothing done yet.

Handlers are plain functions of (decoded message, state, outbox); the service loop around
them publishes `sent` (grouped into one envelope per destination), writes `results`, and only
then acks the inbound message. Tests fill an inbox, call a handler and read the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from droplet.errors import SignatureError
from droplet.proto import pb
from droplet.store.values import ResultWrite


@dataclass
class Outgoing:
    queue: str
    message: pb.Message
    persistent: bool = True
    after_store: bool = False  # publish only once the results are written
    correlation_id: str | None = None


@dataclass
class Outbox:
    sent: list[Outgoing] = field(default_factory=list)
    results: list[ResultWrite] = field(default_factory=list)
    # MULTI calls that ended: their buffered writes, committed in one transaction each.
    commits: list[tuple[dict[str, pb.Value], set[str]]] = field(default_factory=list)

    def send(self, queue: str, message: pb.Message, *, persistent: bool = True) -> None:
        self.sent.append(Outgoing(queue, message, persistent))

    def reply(
        self,
        address: str | None,
        response: pb.GenericResponse,
        after_store: bool = False,
        correlation_id: str | None = None,
    ) -> None:
        """Pushes a response to a reply address (transient: what must last is in the store)."""
        if address:
            message = pb.Message(response=response)
            self.sent.append(Outgoing(address, message, False, after_store, correlation_id))

    def store_result(self, write: ResultWrite) -> None:
        self.results.append(write)

    def messages_to(self, queue: str) -> list[pb.Message]:
        return [o.message for o in self.sent if o.queue == queue]

    def commit(self, writes: dict[str, pb.Value], deletes: set[str]) -> None:
        if writes or deletes:
            self.commits.append((dict(writes), set(deletes)))

    def clear(self) -> None:
        self.sent.clear()
        self.results.clear()
        self.commits.clear()


def error_response(
    response_id: str, code: int, message: str = "", traceback: str = "", call_id: str = ""
) -> pb.GenericResponse:
    info = pb.ErrorInfo(code=code, message=message, traceback=traceback)  # type: ignore[arg-type]
    response = pb.GenericResponse(
        success=False, error=code, response_id=response_id, call_id=call_id  # type: ignore[arg-type]
    )
    response.value.type = pb.ERROR
    response.value.body = info.SerializeToString()
    response.message = message
    return response


def deliver_outcome(
    out: Outbox,
    *,
    response_id: str,
    value: pb.Value,
    call_id: str,
    response_address: str,
    store: bool,
    expires: bool,
    inline_limit_bytes: int,
    revision: int = 0,
) -> None:
    """Hands a call's outcome (result or ERROR value) to its caller and/or the store.

    The reply carries the value inline when it is small; a large value is only announced
    (`stored`) and the client reads it from etcd. The reply goes out before the store write
    only for results under generated keys, which nobody reads by key before the future has
    its value; under a caller's output key it waits for the write, so that a caller who has
    its answer always finds the key written.
    """
    failed = value.type == pb.ERROR
    response = pb.GenericResponse(
        success=not failed, response_id=response_id, call_id=call_id, revision=revision
    )
    if failed:
        info = pb.ErrorInfo()
        info.ParseFromString(value.body)
        response.error = info.code
        response.message = info.message
    big = len(value.body) > inline_limit_bytes
    if store:
        out.store_result(ResultWrite(response_id, value, call_id, expires))
    if big and store:
        response.stored = True
    else:
        response.value.CopyFrom(value)
    out.reply(response_address, response, after_store=store and (big or not expires))


INLINE_REPLY_BYTES = 1024 * 1024


def call_ref(schedule: pb.DagSchedule) -> pb.CallRef:
    return pb.CallRef(
        call_id=schedule.call_id or schedule.id,
        response_address=schedule.response_address,
        output_key=schedule.output_key,
        direct_response=schedule.direct_response,
    )


def deliver_call_outcome(
    out: Outbox, ref: pb.CallRef, value: pb.Value, revision: int = 0
) -> None:
    """Delivers the outcome of a DAG call (result or ERROR value) as its CallRef says."""
    deliver_outcome(
        out,
        revision=revision,
        response_id=ref.output_key or ref.call_id,
        value=value,
        call_id=ref.call_id,
        response_address=ref.response_address,
        store=not ref.direct_response,
        expires=not ref.output_key,
        inline_limit_bytes=INLINE_REPLY_BYTES,
    )


def fail_call(out: Outbox, ref: pb.CallRef, code: int, message: str) -> None:
    info = pb.ErrorInfo(code=code, message=message)  # type: ignore[arg-type]
    value = pb.Value(type=pb.ERROR, body=info.SerializeToString())
    deliver_call_outcome(out, ref, value)


def refuse(
    out: Outbox,
    messages: list[pb.Message],
    reply_to: str | None,
    correlation_id: str | None,
    code: int,
    reason: str,
) -> None:
    """Tells whoever waits on refused messages why, so a bad request fails at once instead
    of timing out. The messages come from envelope.peek: only their addresses are used."""
    told = False
    for message in messages:
        kind = message.WhichOneof("kind")
        if kind == "call":
            call = message.call
            address = reply_to or call.response_address
            out.reply(address, error_response(call.response_key, code, reason,
                                              call_id=call.call_id))
            told = told or bool(address)
        elif kind == "dag_call":
            response_id = message.dag_call.output_key or message.dag_call.call_id
            out.reply(reply_to, error_response(response_id, code, reason,
                                               call_id=message.dag_call.call_id))
            told = told or bool(reply_to)
        elif kind == "schedule":
            ref = call_ref(message.schedule)
            out.reply(ref.response_address, error_response(
                ref.output_key or ref.call_id, code, reason, call_id=ref.call_id))
            told = told or bool(ref.response_address)
    if not told and reply_to and correlation_id:
        out.reply(reply_to, error_response("", code, reason), correlation_id=correlation_id)


def refusal_code(error: Exception) -> int:
    if isinstance(error, SignatureError):
        return pb.UNAUTHORIZED
    code = getattr(error, "code", pb.NO_ERROR)
    return code if code != pb.NO_ERROR else pb.INVALID_REQUEST
