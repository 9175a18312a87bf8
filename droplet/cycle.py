"""The one message cycle of every consume loop: decode, handle, commit, then ack or refuse.

Schedulers (calls and admin), workers, the reaper draining a dead worker's queue and the
settling of long-call claims all run their deliveries through `Cycle.run`:

1. decode and verify the envelope; one that fails is dead-lettered, and whoever waits for an
   answer is told so by an UNSIGNED reply, only ever to a reply address (refusal.py);
2. hand each message to the loop's handler, which fills an Outbox;
3. commit each message's outbox before the next message runs: durable writes first (a call's
   outcome, written once; MULTI writes; join records), then every message that depends on them,
   published with confirms. The answer to a call always carries the outcome that was stored;
4. ack the delivery once every publish it caused is confirmed. A store that is away, or a
   publish the broker did not take, requeues it instead; a handler that crashes on a message
   dead-letters that message alone and fails the calls it concerns (their callers are told);
   a commit etcd can never take (too large) fails the calls it concerns at once, and is acked.

A message addressed to a worker queue that no longer exists (its worker died) goes to the
schedulers instead, which place it again. Transport knows nothing of any of this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from droplet import threadclock
from droplet.acks import AckGate, Settlement, group
from droplet.broker.interface import BrokerConnection, Delivery
from droplet.broker_config.names import BATCHING_HEADER, QueueNames
from droplet.errors import DropletError, PoisonMessageError, StoreError
from droplet.handback import hand_back_rest
from droplet.middleware import Chain, Middleware
from droplet.outbox import Durable, Outbox, Outgoing, Reply, callers_of, fail_call
from droplet.prepared_answers import (
    Encoded,
    PreparedAnswers,
    answer,
    encode_answers,
    send_answers,
)
from droplet.priority import message_priority
from droplet.proto import envelope, pb
from droplet.proto.envelope import MAX_ENVELOPE_BYTES
from droplet.proto.replies import error_value, stamp
from droplet.refusal import dead_letter, refusals, refuse_unverified
from droplet.signing import Signer
from droplet.store.commits import Commit, Committed, Committer, Outcome, Status

log = logging.getLogger(__name__)

_BATCHING = {BATCHING_HEADER: 1}
_LINGER_CAP_S = 0.05  # the longest a quick outcome waits for the rest of its delivery
_UNMARKED = threadclock.Mark(0.0, 0.0, -1.0)  # nothing pending yet: nothing lingers

Handler = Callable[[pb.Message, Delivery, pb.Envelope, Outbox], None]


class Cycle:
    def __init__(
        self,
        conn: BrokerConnection,
        signer: Signer,
        names: QueueNames,
        committer: Committer | None,
        *,
        middleware: Middleware | None = None,
        admit: Callable[[Delivery, Sequence[pb.Message]], None] | None = None,
        settlement: Settlement | None = None,
        split: dict[str, int] | None = None,
        prepare: Callable[[str], None] | None = None,
        expect_slow: Callable[[pb.Message], bool] | None = None,
        linger_s: float = 0.005,
        max_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        self.conn = conn
        self.signer = signer
        self.names = names
        self.committer = committer
        self.middleware = middleware or Chain()
        self._admit = admit
        self._settlement = settlement
        self.split = split or {}
        self._prepare = prepare  # declares a retry queue (made on demand) before its use
        # Outcomes of quick messages in one delivery are committed together, unless they have
        # waited linger_s or the next message is expected to take long (see worker/pace.py):
        # no result waits for a slow call that happens to follow it. The linger counts this
        # thread's CPU time, and its wall clock (up to linger_cap_s) without the time it waited
        # for a core (threadclock.py): descheduled for tens of ms on a crowded host, a
        # wall-clock linger split each commit in several etcd transactions.
        self._expect_slow = expect_slow
        self.linger_s = linger_s
        self.linger_cap_s = max(linger_s, _LINGER_CAP_S)
        self._max_bytes = max_bytes  # what one message may carry (max_message_bytes)
        self._pending_lock = threading.Lock()
        self._live: tuple[Outbox, AckGate, deque[pb.Message], Delivery] | None = None
        self._running: pb.Message | None = None  # the message being handled now

    # -- one delivery ----------------------------------------------------------------------

    def run(self, delivery: Delivery, handle: Handler) -> AckGate:
        gate = AckGate(self.conn, delivery, self._settlement)
        try:
            received = envelope.decode_envelope(delivery.body, self.signer)
        except DropletError as exc:
            refuse_unverified(self.conn, self.middleware, delivery, exc)
            gate.dead()
            gate.release()
            return gate
        try:
            if self._admit is not None:
                self._admit(delivery, received.messages)  # verified: no second parse
        except PoisonMessageError as exc:
            try:
                self.commit(refusals(received.messages, delivery, exc, self.middleware,
                                     self.committer is not None), gate)
            except StoreError:
                return self._requeued(gate)
            gate.dead()
            gate.release()
            return gate
        except StoreError as exc:
            log.warning("etcd is unavailable (%s); the message goes back", exc)
            gate.requeue()
            gate.store_unavailable = True
            gate.release()
            return gate
        pending = Outbox()  # handled messages whose outboxes are not committed yet
        since = _UNMARKED  # when the oldest pending outcome was started
        rest = deque(received.messages)  # not started yet (hand_back_rest may take them)
        self._live = (pending, gate, rest, delivery)
        try:
            while True:
                try:
                    message = rest.popleft()
                except IndexError:  # all run, or handed back
                    break
                self._running = message
                if self._due(pending, since, message) and not self._flush(pending, gate):
                    return self._requeued(gate)
                if pending.empty() and rest:  # (the last message: no linger to measure)
                    since = threadclock.mark()
                if not self._run_one(message, delivery, received, handle, gate, pending):
                    return self._requeued(gate)
            with self.conn.written_together():  # the last answers and the ack: one write
                if not self._flush(pending, gate):
                    return self._requeued(gate)
                gate.release()
        finally:
            self._live = None
            self._running = None
        return gate

    def flush_pending(self) -> None:
        """Commits what the delivery in hand has produced so far (the keeper thread calls it
        while a function runs long, holding the connection): a slow run that a function's
        history did not predict does not hold back the results before it."""
        live = self._live
        if live is not None:
            with self._pending_lock:
                taken = Outbox()
                taken.extend(live[0])
                live[0].clear()
            try:
                self.commit(taken, live[1])
            except BaseException:
                with self._pending_lock:
                    taken.extend(live[0])
                    live[0].clear()
                    live[0].extend(taken)  # put back, in order: the main thread retries
                raise

    def has_pending(self) -> bool:
        """Whether the delivery in hand has outcomes not committed yet, or calls not started."""
        live = self._live
        return live is not None and (not live[0].empty() or bool(live[2]))

    def hand_back_rest(self, waiting: Callable[[], bool] = lambda: False) -> None:
        """The keeper thread calls it while a run goes on long: the calls of the delivery not
        started yet go back to the shared queue one to a message, unless the run's function
        is known to be quick (a host too busy to run it at once: see handback.py)."""
        live, running = self._live, self._running
        if live is None or running is None or (
                self._expect_slow is not None and not self._expect_slow(running)):
            return
        hand_back_rest(self.conn, self.signer, self.names, live[3], live[2], live[1].expect,
                       waiting)

    def _due(self, pending: Outbox, since: threadclock.Mark, upcoming: pb.Message) -> bool:
        """Whether what is pending must be committed before the upcoming message runs."""
        if pending.empty():
            return False
        if time.thread_time() - since.cpu_s > self.linger_s:
            return True
        if (time.monotonic() - since.wall_s > self.linger_cap_s
                and threadclock.own_wall_s(since) > self.linger_cap_s):
            return True
        return self._expect_slow is not None and self._expect_slow(upcoming)

    def _requeued(self, gate: AckGate) -> AckGate:
        gate.requeue()
        gate.store_unavailable = True
        gate.release()
        return gate

    def _flush(self, pending: Outbox, gate: AckGate) -> bool:
        with self._pending_lock:  # its lists are taken whole, pending gets fresh ones
            taken = Outbox(pending.sent, pending.replies, pending.durable)
            pending.sent, pending.replies, pending.durable = [], [], []
        try:
            self.commit(taken, gate)
        except StoreError as exc:
            log.warning("etcd is unavailable (%s); the message goes back", exc)
            return False
        return True

    def _run_one(self, message: pb.Message, delivery: Delivery, received: pb.Envelope,
                 handle: Handler, gate: AckGate, pending: Outbox) -> bool:
        """Handles one message into `pending`; False when the delivery must go back (etcd).
        A message whose handler fails is refused and dead-lettered on its own."""
        kind = message.WhichOneof("kind") or "empty"
        out = Outbox()
        try:
            handle(message, delivery, received, out)
            for item in out.durable:  # whom to fail if etcd cannot take it (_settle)
                if item.commit.outcome is None and not item.callers:
                    item.callers = callers_of(message, delivery)
            with self._pending_lock:
                pending.extend(out)
            self.middleware.after_message(kind, pb.NO_ERROR)
            return True
        except StoreError as exc:
            log.warning("etcd is unavailable (%s); the message goes back", exc)
            return False
        except Exception as exc:
            if not isinstance(exc, DropletError):
                log.exception("handling a %s message from %s failed", kind, delivery.queue)
            log.warning("dead-lettering a %s message from %s: %s", kind, delivery.queue, exc)
            failure = exc
        try:
            self.commit(refusals([message], delivery, failure, self.middleware,
                                 self.committer is not None), gate)
            dead_letter(self.conn, self.signer, self.names.dead, message, delivery,
                        str(failure), gate)
        except StoreError:
            return False
        return True

    # -- commit ----------------------------------------------------------------------------

    def commit(self, out: Outbox, gate: AckGate | None = None) -> None:
        """Stores the outbox's durable writes (plain outcomes together, in as few etcd
        transactions as fit), then publishes what it sends and answers. The answers of plain
        outcomes are built while etcd writes them (prepared_answers.py)."""
        sending = list(out.sent)
        replies = list(out.replies)
        ready: list[Encoded] | None = None
        if out.durable:
            if self.committer is None:
                raise DropletError("this loop cannot store outcomes")
            prepared = None
            if not replies and PreparedAnswers.worth_preparing(out.durable):
                prepared = PreparedAnswers(out.durable, self.signer, self.split, self._max_bytes)
            results = self.committer.apply_all([item.commit for item in out.durable],
                                               prepared.prepare if prepared else None)
            ready = prepared.usable(results) if prepared else None
            for item, done in zip(out.durable, results, strict=True):
                if ready is None:
                    sending += self._settle(item, done, replies)
                else:  # each written as it came: _settle's DONE, its answer built already
                    outcome = item.commit.outcome
                    assert outcome is not None
                    self.middleware.after_outcome(outcome.call_id, outcome.value)
                    sending += item.then
        if sending:
            self.publish(sending, gate)
        if ready is not None:
            send_answers(self.conn, ready)
        elif replies:
            send_answers(self.conn, encode_answers(replies, self.signer, self.split,
                                                   self._max_bytes))

    def _settle(self, item: Durable, done: Committed, replies: list[Reply]) -> list[Outgoing]:
        """What a durable item's commit leads to: its answer, and what it sends."""
        assert self.committer is not None
        commit = item.commit
        if done.status is Status.TOO_LARGE and commit.outcome is None:
            return self._refuse_too_large(item, done.why, replies)
        if done.status is Status.TOO_LARGE:
            done, commit = self._fail(commit, pb.INVALID_REQUEST, (
                f"this call's commit is too large: {done.why}: write fewer keys in one MULTI "
                "call, or pass large values by reference (store them, send the key)"))
        elif done.status is Status.CONFLICT:
            if item.on_conflict:  # a MULTI call runs again; a copy's loss is decided again
                return item.on_conflict
            if commit.multi is None:
                raise StoreError("an outcome changed while it was being written; again")
            done, commit = self._fail(commit, pb.CONFLICT, (
                "this MULTI call's commit lost to concurrent writers on every attempt; "
                "nothing of it was written"))
        if done.status is Status.TAKEN:
            return []
        self._answer(item, commit, done, replies)
        return item.then if done.status is Status.DONE else []

    def _refuse_too_large(self, item: Durable, why: str, replies: list[Reply]
                          ) -> list[Outgoing]:
        """A commit without an outcome that etcd cannot take (a fan-in's partial result over
        its request limit) fails the calls it works for, once and now: retrying cannot help,
        and a message that failed on every delivery would be dead-lettered, its caller told
        late and wrongly. Nothing it would have sent goes."""
        assert self.committer is not None
        out = Outbox()
        for ref in item.callers:
            fail_call(out, ref, pb.INVALID_REQUEST, (
                f"a partial result of this call is too large to record: {why}; pass large "
                "values between functions by reference (store them, return the key)"))
        if not item.callers:
            log.error("dropping a commit that no call owns, too large for etcd: %s", why)
        replies.extend(out.replies)
        sending = list(out.sent)
        for failed in out.durable:
            sending += self._settle(failed, self.committer.apply(failed.commit), replies)
        return sending

    def _fail(self, commit: Commit, code: int, message: str) -> tuple[Committed, Commit]:
        """Replaces a commit that cannot happen by the call's error outcome alone."""
        assert self.committer is not None and commit.outcome is not None
        failed = Commit(outcome=Outcome(commit.outcome.call_id, error_value(code, message)))
        return self.committer.apply(failed), failed

    def _answer(self, item: Durable, commit: Commit, done: Committed,
                replies: list[Reply]) -> None:
        outcome = commit.outcome
        if outcome is None:
            return
        value = done.existing if done.status is Status.DUPLICATE else outcome.value
        assert value is not None
        self.middleware.after_outcome(outcome.call_id, value)
        if item.reply is None:
            return
        revision = item.reply.response.revision
        if commit.multi is not None or outcome.output_key or done.status is Status.DUPLICATE:
            revision = max(revision, done.revision)  # the session then reads what it wrote
        reply = answer(item, value, revision, self._max_bytes)
        stamp(reply.response.trace, "stored")
        replies.append(reply)

    # -- publishing ------------------------------------------------------------------------

    def publish(self, outgoing: Iterable[Outgoing], gate: AckGate | None = None) -> None:
        """Publishes in envelopes per destination; a durable message must reach a queue (one
        for a worker that is gone is handed to the schedulers instead)."""
        for queue, persistent, correlation_id, items in group(outgoing, self.split,
                                                              self._max_bytes):
            if self._prepare is not None and queue.startswith(self.names.retry_prefix):
                self._prepare(queue)
            body = envelope.encode([i.message for i in items], self.signer)
            confirmed = gate.expect() if gate is not None and persistent else None
            to_worker = self.names.is_worker_queue(queue)
            if confirmed is not None and to_worker:
                confirmed = self._rescuing(confirmed, items, gate)
            batching = to_worker and envelope.batches(i.message for i in items)
            self.conn.publish(queue, body, persistent=persistent, mandatory=persistent,
                              correlation_id=correlation_id, on_confirm=confirmed,
                              priority=message_priority(items[0].message),
                              headers=_BATCHING if batching else None)

    def _rescuing(self, confirmed: Callable[[bool], None], items: list[Outgoing],
                  gate: AckGate | None) -> Callable[[bool], None]:
        def callback(ok: bool) -> None:
            if not ok:
                log.info("a worker queue is gone: %d messages go to the schedulers", len(items))
                again = [Outgoing(self.names.calls, i.message) for i in items]
                held = gate.expect() if gate is not None else None  # until they are sent

                def resend() -> None:
                    self.publish(again, gate)
                    if held is not None:
                        held(True)

                self.conn.call_soon_threadsafe(resend)
            confirmed(True)

        return callback
