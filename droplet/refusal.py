"""Refusing what a message cycle cannot run: whoever waits is told, the message is kept aside.

A delivery that fails verification cannot be trusted to name a caller: it is only answered
UNSIGNED, and only to reply addresses, never with a signed message to an address nobody
vouched for. A verified message that is poison, or whose handler crashed, fails every call it
concerns through their write-once outcomes (the Outbox this builds, committed by the cycle),
and goes to the dead-letter queue with why. See cycle.py for when each happens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from droplet.acks import AckGate
from droplet.broker.interface import BrokerConnection, Delivery
from droplet.broker_config.names import DEAD_FROM_HEADER, DEAD_REASON_HEADER, is_reply_address
from droplet.errors import SignatureError
from droplet.middleware import Middleware
from droplet.outbox import Outbox, callers_of, fail_call
from droplet.proto import envelope, pb
from droplet.proto.replies import error_response
from droplet.signing import Signer

log = logging.getLogger(__name__)


def refuse_unverified(conn: BrokerConnection, middleware: Middleware, delivery: Delivery,
                      error: Exception) -> None:
    """Dead-letters what cannot be trusted; the sender, if it waits on a reply address,
    learns why from an unsigned answer (which a client shows as UNAUTHORIZED)."""
    log.warning("dead-lettering an unverified message from %s: %s", delivery.queue, error)
    code = pb.UNAUTHORIZED if isinstance(error, SignatureError) else pb.INVALID_REQUEST
    middleware.after_message("unverified", code)
    told: set[str] = set()
    for message in envelope.peek(delivery.body):
        for ref in callers_of(message, delivery):
            address = ref.response_address
            if is_reply_address(address) and ref.call_id not in told:
                told.add(ref.call_id)
                _send_unsigned(conn, address, error_response(
                    ref.output_key or ref.call_id, code, f"refused: {error}",
                    call_id=ref.call_id), None)
    if not told and is_reply_address(delivery.reply_to) and delivery.correlation_id:
        _send_unsigned(conn, delivery.reply_to or "", error_response(
            "", code, f"refused: {error}"), delivery.correlation_id)


def _send_unsigned(conn: BrokerConnection, address: str, response: pb.GenericResponse,
                   correlation_id: str | None) -> None:
    body = envelope.encode_unsigned([pb.Message(response=response)])
    conn.publish(address, body, persistent=False, correlation_id=correlation_id)


def refusals(messages: Sequence[pb.Message], delivery: Delivery, error: Exception,
             middleware: Middleware, stores: bool) -> Outbox:
    """Fails every call the (verified) messages concern, through their write-once
    outcomes, so a caller never waits for an answer that will not come. A loop that
    stores nothing (`stores` False) only answers."""
    code = getattr(error, "code", pb.NO_ERROR) or pb.INVALID_REQUEST
    out = Outbox()
    told: set[str] = set()  # a call gets one refusal (a notice and its trigger travel
    for message in messages:  # together)
        kind = message.WhichOneof("kind") or "empty"
        middleware.after_message(kind, code)
        if kind in ("function", "dag", "delete_dag") and is_reply_address(
                delivery.reply_to):
            out.reply(delivery.reply_to, error_response(
                "", code, f"refused: {error}", call_id=delivery.correlation_id or ""),
                delivery.correlation_id)
        for ref in callers_of(message, delivery):
            if ref.call_id not in told:
                told.add(ref.call_id)
                fail_call(out, ref, code, f"refused: {error}")
    if not stores:
        out.durable = []
    return out


def dead_letter(conn: BrokerConnection, signer: Signer, dead_queue: str, message: pb.Message,
                delivery: Delivery, reason: str, gate: AckGate) -> None:
    """Keeps a message no handler could run in the dead-letter queue, with where it came
    from and why (what `droplet dead-letters` shows); its delivery is acked once the broker
    has it."""
    headers = {DEAD_FROM_HEADER: delivery.queue, DEAD_REASON_HEADER: reason[:500]}
    body = envelope.encode([message], signer)
    conn.publish(dead_queue, body, headers=headers, mandatory=True, on_confirm=gate.expect())
