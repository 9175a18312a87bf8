"""Dead letters as the dashboard sees them: listed without changing the queue, and requeued or
purged by id (or all of them) when an operator asks.

Listing takes messages without acking them and closes the connection, so they go back where
they were, as `droplet dead-letters` does; the description of each comes from the CLI's
`describe`, so both show the same thing. An id is the start of the SHA-1 of the message's
body: it names the message across listings (copies of one message share it). A requeued
message is acked in the dead-letter queue only once the broker confirmed it in the queue it
came from, so a requeue that fails midway loses nothing: what was not confirmed stays dead.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker_config.names import QueueNames
from droplet.cli.dead_letters import describe
from droplet.errors import BrokerError, DropletError
from droplet.signing import Signer

T = TypeVar("T")
ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")
ALL = "all"
ACTIONS = ("requeue", "purge")
SHOWN = 100  # dead letters listed on the page
ACTED_ON = 1000  # at most this many per action
_CACHE_S = 3.0
_CONFIRM_WAIT_S = 5.0


@dataclass(frozen=True)
class DeadLetter:
    id: str
    from_queue: str
    reason: str
    size: int
    verified: bool
    problem: str
    messages: list[dict[str, str]]

    @property
    def summary(self) -> str:
        return ", ".join(m["kind"] + (f" {m['name']}" if "name" in m else "")
                         for m in self.messages) or "undecodable"


@dataclass(frozen=True)
class Listing:
    depth: int | None  # None: the dead-letter queue does not exist yet
    letters: list[DeadLetter]
    taken_at: float


@dataclass
class Outcome:
    """What an action did: counts, and why some messages were left where they were."""

    action: str
    target: str
    done: int = 0
    left: list[str] = field(default_factory=list)


def letter_id(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()[:12]


class DeadLetters:
    def __init__(self, connect: ConnectionFactory, names: QueueNames, signer: Signer) -> None:
        self._connect = connect
        self._names = names
        self._signer = signer
        self._lock = threading.Lock()  # one broker operation at a time, from any request
        self._cached: Listing | None = None
        self._failed: tuple[float, str] | None = None  # when reading last failed, and why

    def listing(self, fresh: bool = False) -> Listing:
        """The first SHOWN dead letters. What was read, or that reading failed, holds for a
        few seconds (pages refresh often), also for the views that waited on the lock: with
        RabbitMQ not answering, each view tried again, one connect timeout after another."""
        if not fresh and (known := self._recent()) is not None:
            return known
        with self._lock:
            if not fresh and (known := self._recent()) is not None:
                return known
            try:
                listing = self._with_connection(self._list)
            except DropletError as exc:
                self._failed = (time.time(), str(exc))
                raise
            self._cached, self._failed = listing, None
        return listing

    def _recent(self) -> Listing | None:
        """The listing of the last few seconds, or None; raises when reading it failed."""
        failed = self._failed
        if failed is not None and time.time() - failed[0] < _CACHE_S:
            raise BrokerError(failed[1])
        cached = self._cached
        if cached is not None and time.time() - cached.taken_at < _CACHE_S:
            return cached
        return None

    def act(self, action: str, target: str) -> Outcome:
        """Requeues or purges the dead letters with id `target` (or all); the caller checked
        the arguments, the token and the confirmation."""
        if action not in ACTIONS or not (target == ALL or ID_PATTERN.match(target)):
            raise ValueError(f"bad action {action!r} on {target!r}")
        with self._lock:
            outcome = self._with_connection(lambda conn: self._act(conn, action, target))
        self._cached, self._failed = None, None
        return outcome

    def _with_connection(self, work: Callable[[BrokerConnection], T]) -> T:
        conn = self._connect()
        try:
            return work(conn)
        finally:
            conn.close()  # whatever was taken and not acked goes back to the queue

    def _list(self, conn: BrokerConnection) -> Listing:
        depth = conn.queue_depth(self._names.dead)
        letters: list[DeadLetter] = []
        while depth is not None and len(letters) < SHOWN:
            delivery = conn.get(self._names.dead)
            if delivery is None:
                break
            letters.append(_letter(delivery, self._signer))
        return Listing(depth, letters, time.time())

    def _act(self, conn: BrokerConnection, action: str, target: str) -> Outcome:
        outcome = Outcome(action, target)
        if conn.queue_depth(self._names.dead) is None:
            return outcome
        confirmed: list[int] = []
        waiting = 0
        taken = 0
        while taken < ACTED_ON and (delivery := conn.get(self._names.dead)) is not None:
            taken += 1
            letter = _letter(delivery, self._signer)
            if target not in (ALL, letter.id):
                continue
            if action == "purge":
                conn.ack(delivery.tag)
                outcome.done += 1
            elif not letter.from_queue:
                outcome.left.append(f"{letter.id}: where it died is not recorded")
            else:
                waiting += 1
                conn.publish(letter.from_queue, delivery.body, reply_to=delivery.reply_to,
                             correlation_id=delivery.correlation_id, mandatory=True,
                             on_confirm=_acker(conn, delivery, confirmed, outcome, letter))
        deadline = time.monotonic() + _CONFIRM_WAIT_S
        while len(confirmed) < waiting and time.monotonic() < deadline:
            conn.poll(0.05)
        if len(confirmed) < waiting:
            outcome.left.append(f"{waiting - len(confirmed)} not confirmed by the broker in "
                                f"{_CONFIRM_WAIT_S:g}s: they stay dead")
        outcome.done += sum(1 for ok in confirmed if ok)
        untouched = conn.queue_depth(self._names.dead) if taken == ACTED_ON else 0
        if untouched:  # the confirmation page promised "all": say what one action left
            outcome.left.append(f"{untouched} more not looked at (an action takes at most "
                                f"{ACTED_ON}): do it again for those")
        return outcome


def _acker(conn: BrokerConnection, delivery: Delivery, confirmed: list[int], outcome: Outcome,
           letter: DeadLetter) -> Callable[[bool], None]:
    def on_confirm(ok: bool) -> None:
        if ok:
            conn.ack(delivery.tag)
        else:
            outcome.left.append(f"{letter.id}: {letter.from_queue} no longer exists")
        confirmed.append(1 if ok else 0)

    return on_confirm


def _letter(delivery: Delivery, signer: Signer) -> DeadLetter:
    entry = describe(delivery, signer)
    return DeadLetter(
        id=letter_id(delivery.body), from_queue=entry["from_queue"], reason=entry["reason"],
        size=entry["bytes"], verified=bool(entry.get("verified")),
        problem=str(entry.get("problem", "")), messages=entry["messages"],
    )
