"""Reading the replies that reach a client: which answer each is, and whether to believe it.

A reply is keyed by the call id it carries, which is signed; the correlation id (an AMQP
property nobody signs) must agree with it. A reply that fails verification is not believed,
but whoever waits for it is not left waiting: it becomes an UNAUTHORIZED error (the usual cause
is a client with another signing_key than the fleet's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from droplet.broker.interface import Delivery
from droplet.errors import DropletError
from droplet.proto import envelope, pb
from droplet.proto.replies import error_response
from droplet.signing import Signer

log = logging.getLogger(__name__)


def answers_in(delivery: Delivery, signer: Signer) -> Iterator[tuple[str, pb.GenericResponse]]:
    """The replies a delivery carries, each with the key of the request it answers."""
    try:
        messages = envelope.decode(delivery.body, signer)
        trusted = True
    except DropletError as exc:
        # Not to be believed; but whoever waits for it learns why nothing comes.
        log.warning("a reply failed verification: %s", exc)
        messages, trusted = envelope.peek(delivery.body), False
    for message in messages:
        if message.WhichOneof("kind") != "response":
            continue
        response = message.response
        key = key_of(response, delivery.correlation_id, trusted)
        if key is None:
            continue
        if not trusted:
            response = error_response(
                response.response_id, pb.UNAUTHORIZED,
                "a reply failed signature verification: does this client use "
                "the fleet's signing_key?", call_id=response.call_id,
            )
        yield key, response


def key_of(response: pb.GenericResponse, correlation_id: str | None,
           trusted: bool) -> str | None:
    """Whose answer a reply is: the signed call id it carries. The correlation id (an
    AMQP property nobody signs) must agree with it; a verified reply whose ids disagree
    was re-addressed by someone, and is dropped."""
    if response.call_id:
        if trusted and correlation_id and correlation_id != response.call_id:
            log.warning("dropped a reply re-addressed from %s to %s", response.call_id,
                        correlation_id)
            return None
        return response.call_id
    return correlation_id or response.response_id or None
