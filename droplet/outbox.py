"""The outbound port of every handler: what it wants stored and sent, nothing done yet.

Handlers are plain functions of (decoded message, state, outbox). They never publish or write
themselves: `cycle.py` commits an outbox (durable writes first, then the messages that depend
on them) and only then acks the inbound message. Tests fill an inbox, call a handler and read
the outbox.

A call's outcome is handed over with `deliver`: stored write-once under the call id (unless the
call asked for a direct response only), answered to the caller once stored, and answered with
the stored outcome instead when the call turns out to have had one already.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from droplet.broker.interface import Delivery
from droplet.broker_config.names import is_reply_address
from droplet.graph import BEGIN
from droplet.proto import pb
from droplet.proto.replies import call_ref, response_for
from droplet.store.commits import Commit, MultiWrites, Outcome

# A result bigger than this is not carried by the reply: the caller reads it from the store.
INLINE_REPLY_BYTES = 1024 * 1024


@dataclass
class Outgoing:
    queue: str
    message: pb.Message
    persistent: bool = True
    correlation_id: str | None = None


@dataclass
class Reply:
    """An answer on a reply address (transient: what must last is in the store)."""

    address: str
    response: pb.GenericResponse
    correlation_id: str | None = None


@dataclass
class Durable:
    """Writes that must be stored before anything that depends on them is sent."""

    commit: Commit
    reply: Reply | None = None  # the outcome's answer, completed from what was stored
    then: list[Outgoing] = field(default_factory=list)  # sent only if the commit took effect
    # MULTI: sent instead when the commit lost to a concurrent writer (the call runs again);
    # when empty, the call fails with CONFLICT.
    on_conflict: list[Outgoing] = field(default_factory=list)
    # The calls a commit without an outcome (a join's partial, a step's record) works for:
    # failed, when etcd cannot take the commit (too large), so their callers learn it at once.
    callers: list[pb.CallRef] = field(default_factory=list)


@dataclass
class Outbox:
    sent: list[Outgoing] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    durable: list[Durable] = field(default_factory=list)

    def send(self, queue: str, message: pb.Message, *, persistent: bool = True) -> None:
        self.sent.append(Outgoing(queue, message, persistent))

    def reply(self, address: str | None, response: pb.GenericResponse,
              correlation_id: str | None = None) -> None:
        if address:
            self.replies.append(Reply(address, response, correlation_id))

    def store(self, commit: Commit, *, then: Iterable[Outgoing] = (),
              reply: Reply | None = None, on_conflict: Iterable[Outgoing] = ()) -> None:
        self.durable.append(Durable(commit, reply, list(then), list(on_conflict)))

    def empty(self) -> bool:
        return not (self.sent or self.replies or self.durable)

    def extend(self, other: Outbox) -> None:
        self.sent += other.sent
        self.replies += other.replies
        self.durable += other.durable

    def clear(self) -> None:
        self.sent.clear()
        self.replies.clear()
        self.durable.clear()

    def messages_to(self, queue: str) -> list[pb.Message]:
        """Everything addressed to queue, whatever it waits for (for tests)."""
        found = [o.message for o in self.sent if o.queue == queue]
        for item in self.durable:
            found += [o.message for o in item.then + item.on_conflict if o.queue == queue]
        return found

    def responses_to(self, address: str) -> list[pb.GenericResponse]:
        """Every answer to address, stored outcomes included (for tests)."""
        found = [r.response for r in self.replies if r.address == address]
        return found + [d.reply.response for d in self.durable
                        if d.reply is not None and d.reply.address == address]

    def outcomes(self) -> list[Outcome]:
        return [d.commit.outcome for d in self.durable if d.commit.outcome is not None]


def deliver(
    out: Outbox,
    *,
    call_id: str,
    response_id: str,
    value: pb.Value,
    address: str,
    store: bool,
    output_key: str = "",
    keep: bool = False,
    once: bool = False,
    revision: int = 0,
    multi: MultiWrites | None = None,
    on_conflict: Iterable[Outgoing] = (),
    then: Iterable[Outgoing] = (),
    join: Commit | None = None,
    trace: Iterable[pb.Stamp] = (),
) -> None:
    """Hands a call's outcome (result or ERROR value) to the store and to its caller.

    Stored, the answer goes once the outcome is written (or, when the call already had one,
    carries that one instead); a MULTI call's writes commit in the same transaction, and so do
    the records of the join that produced the outcome (`join`). Not stored (a direct response),
    it is answered at once, unless `once`: then the outcome is still written once under the
    call id, so that whatever answers this call later answers the same.
    """
    if not store and multi is None and join is None and not once:
        direct = response_for(call_id, response_id, value, revision)
        direct.trace.extend(trace)
        out.reply(address, direct)
        out.sent.extend(then)
        return
    response = response_for(call_id, response_id, value, revision, INLINE_REPLY_BYTES)
    response.trace.extend(trace)
    big = len(value.body) > INLINE_REPLY_BYTES
    commit = join or Commit()
    commit.multi = multi
    if store or multi is not None or once:
        commit.outcome = Outcome(call_id, value, output_key if store else "", keep=keep or big)
    elif address:
        out.reply(address, response_for(call_id, response_id, value, revision))
    reply = Reply(address, response) if address and commit.outcome is not None else None
    out.store(commit, reply=reply, then=then, on_conflict=on_conflict)


def deliver_call_outcome(out: Outbox, ref: pb.CallRef, value: pb.Value, revision: int = 0,
                         **durable: object) -> None:
    """Delivers the outcome of a DAG call (result or ERROR value) as its CallRef says."""
    deliver(
        out, call_id=ref.call_id, response_id=ref.output_key or ref.call_id, value=value,
        address=ref.response_address, store=not ref.direct_response, once=ref.once,
        output_key=ref.output_key, revision=revision, **durable,  # type: ignore[arg-type]
    )


def fail_call(out: Outbox, ref: pb.CallRef, code: int, message: str) -> None:
    info = pb.ErrorInfo(code=code, message=message)  # type: ignore[arg-type]
    deliver_call_outcome(out, ref, pb.Value(type=pb.ERROR, body=info.SerializeToString()))


def callers_of(message: pb.Message, delivery: Delivery) -> list[pb.CallRef]:
    """Whom a message's calls answer to: what a refusal or a lost worker must tell."""
    kind = message.WhichOneof("kind")
    if kind == "call":
        call = message.call
        address = delivery.reply_to if is_reply_address(delivery.reply_to) else ""
        return [pb.CallRef(call_id=call.call_id or call.response_key,
                           response_address=address or call.response_address,
                           direct_response=call.direct_response)]
    if kind == "dag_call":
        dag_call = message.dag_call
        address = delivery.reply_to if is_reply_address(delivery.reply_to) else ""
        return [pb.CallRef(call_id=dag_call.call_id, output_key=dag_call.output_key,
                           response_address=address or dag_call.response_address,
                           direct_response=dag_call.direct_response,
                           once=dag_call.consistency == pb.MULTI)]
    if kind == "schedule":
        return [call_ref(message.schedule)]
    if kind == "trigger":
        trigger = message.trigger
        if trigger.HasField("schedule"):
            ref = call_ref(trigger.schedule)
            if not ref.response_address and is_reply_address(delivery.reply_to):
                ref.response_address = delivery.reply_to or ""  # a client's trigger
            return [ref]
        return [trigger.call] if trigger.call.call_id else []
    return []


def adopt_reply_address(trigger: pb.DagTrigger, reply_to: str | None) -> bool:
    """A DAG call's first trigger that its client published straight to a worker
    (client/dagroutes.py) carries no reply address: the broker names the client's address
    only on delivery, as reply-to (which moves with the message when a dead worker's queue is
    drained). Takes it in; True for such a trigger."""
    if (trigger.source != BEGIN or not is_reply_address(reply_to)
            or trigger.schedule.response_address):
        return False
    trigger.schedule.response_address = reply_to or ""
    trigger.call.response_address = reply_to or ""
    return True
