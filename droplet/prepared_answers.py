"""The answers to stored outcomes, built and signed while etcd writes those outcomes.

A durable call's answer may leave only once its outcome is stored, but nothing stops it being
built before. The message cycle sends the outcomes' transaction to etcd, and while etcd works
on it (about half of a durable call's time in a worker) `PreparedAnswers.prepare` builds,
encodes and signs the answers as they will be if every outcome is written. When etcd answers
that each was, they go out as built: the answer leaves a few tens of microseconds after the
write instead of after building it. When any was not (a duplicate, a conflict, a write too
large), what was prepared is dropped and the answers are built from what was stored, as
before. Only outcomes whose answer cannot depend on etcd's reply are prepared: no MULTI
writes, no output key, not traced (a trace stamps the moment of storing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from droplet.acks import group
from droplet.broker.interface import BrokerConnection
from droplet.outbox import INLINE_REPLY_BYTES, Durable, Outgoing, Reply
from droplet.priority import message_priority
from droplet.proto import envelope, pb
from droplet.proto.envelope import MESSAGE_ROOM_BYTES
from droplet.proto.replies import error_response, response_for
from droplet.signing import Signer
from droplet.store.commits import Committed, Status

log = logging.getLogger(__name__)

# An encoded answer envelope: (reply address, correlation id, AMQP priority, signed body).
Encoded = tuple[str, str | None, int, bytes]
# Outcomes larger than this together are answered after their write, as before: building
# 256 answers of 1 MiB took seconds (far longer than etcd's write), and held them meanwhile.
PREPARED_MAX_BYTES = 256 * 1024


def answer(item: Durable, value: pb.Value, revision: int, max_bytes: int) -> Reply:
    """The answer carrying a stored outcome (`value`) to whoever waits for item's call. A
    result that would make it over max_message_bytes is only announced (`stored`), as one over
    INLINE_REPLY_BYTES is: the caller reads it from the store (not an error: it is stored)."""
    assert item.reply is not None
    skeleton = item.reply.response
    response = response_for(skeleton.call_id, skeleton.response_id, value, revision,
                            INLINE_REPLY_BYTES)
    response.trace.extend(skeleton.trace)
    if response.success and response.ByteSize() + MESSAGE_ROOM_BYTES > max_bytes:
        response.ClearField("value")
        response.stored = True
    return Reply(item.reply.address, response, item.reply.correlation_id)


def encode_answers(replies: Sequence[Reply], signer: Signer, split: dict[str, int],
                   max_bytes: int) -> list[Encoded]:
    """Replies in signed envelopes, one to an address (and correlation id, and priority)."""
    outgoing = [Outgoing(r.address, pb.Message(response=fitting(r.response, max_bytes)), False,
                         r.correlation_id) for r in replies]
    return [(queue, correlation_id, message_priority(items[0].message),
             envelope.encode([i.message for i in items], signer))
            for queue, _, correlation_id, items in group(outgoing, split, max_bytes)]


def fitting(response: pb.GenericResponse, max_bytes: int) -> pb.GenericResponse:
    """The answer, or an INVALID_REQUEST error in its place when it would be over
    max_message_bytes: the broker refuses such a message by closing the channel, after the
    call was acked, and its caller would wait for ever. Only a direct response (not stored)
    carries a result that large: a stored one carries at most INLINE_REPLY_BYTES."""
    size = response.ByteSize()
    if size + MESSAGE_ROOM_BYTES <= max_bytes:
        return response
    log.warning("an answer of %d bytes is over max_message_bytes (%d): the caller gets an "
                "error instead", size, max_bytes)
    return error_response(
        response.response_id, pb.INVALID_REQUEST,
        f"the result takes {size} bytes, over max_message_bytes ({max_bytes}): a direct "
        "response is not stored and must fit in one message; call it stored (no "
        "direct_response) or return a key of a stored value", call_id=response.call_id)


def send_answers(conn: BrokerConnection, encoded: Sequence[Encoded]) -> None:
    """Publishes encoded answers: transient, unconfirmed (what must last is in the store)."""
    for queue, correlation_id, priority, body in encoded:
        conn.publish(queue, body, persistent=False, mandatory=False,
                     correlation_id=correlation_id, priority=priority)


def _preparable(item: Durable) -> bool:
    commit = item.commit
    return (item.reply is not None and commit.outcome is not None and commit.multi is None
            and not commit.outcome.output_key and not len(item.reply.response.trace))


class PreparedAnswers:
    """What `prepare` built for a list of durable items, used if etcd took every outcome."""

    def __init__(self, durable: Sequence[Durable], signer: Signer, split: dict[str, int],
                 max_bytes: int) -> None:
        self._durable = durable
        self._signer = signer
        self._split = split
        self._max_bytes = max_bytes
        self._tried = False  # a retried transaction runs prepare again: once is enough
        self.encoded: list[Encoded] | None = None

    @staticmethod
    def worth_preparing(durable: Sequence[Durable]) -> bool:
        size = 0
        for item in durable:
            outcome = item.commit.outcome
            if outcome is None or not _preparable(item):
                return False
            size += len(outcome.value.body)
        return bool(durable) and size <= PREPARED_MAX_BYTES

    def prepare(self) -> None:
        """Builds the answers as if every outcome is written (run while etcd works; never
        raises: what fails here is built again afterwards, the usual way)."""
        if self._tried:
            return
        self._tried = True
        try:
            replies = []
            for item in self._durable:
                outcome, skeleton = item.commit.outcome, item.reply
                assert outcome is not None and skeleton is not None
                replies.append(answer(item, outcome.value, skeleton.response.revision,
                                      self._max_bytes))
            self.encoded = encode_answers(replies, self._signer, self._split, self._max_bytes)
        except Exception:  # never seen; the answers are then built after the write
            log.debug("preparing answers failed", exc_info=True)
            self.encoded = None

    def usable(self, results: Sequence[Committed]) -> list[Encoded] | None:
        """The prepared answers when etcd wrote every outcome as it came (DONE), else None."""
        if self.encoded is None or len(results) != len(self._durable):
            return None
        if any(done.status is not Status.DONE for done in results):
            return None
        return self.encoded
