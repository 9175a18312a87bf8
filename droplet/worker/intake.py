"""When a worker consumes the shared work queue, and what a delivery may cost it.

Without seats every worker consumes the shared queue whenever it is not busy with a step of
its own queue that may take long, or with a long call (service.py). With seats (seats.py: a
host with more workers than cores), a worker consumes it only while it holds one, and gives
its seat up whenever it stops: then another worker, waiting for it, takes the next calls.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.errors import DropletError
from droplet.proto import envelope
from droplet.worker.pace import Pace
from droplet.worker.seats import Seats


class SharedIntake:
    def __init__(self, queue: str, pace: Pace) -> None:
        self.queue = queue
        self.pace = pace
        self.seats = Seats(0)  # taken up by take_up_seats (a worker process's main thread)
        self._conn: Callable[[], BrokerConnection | None] = lambda: None

    def take_up_seats(self, count: int, queue_identity: str,
                      conn: Callable[[], BrokerConnection | None]) -> None:
        self._conn = conn
        self.seats = Seats(count, queue_identity, on_seated=self._wake)

    def opened(self, conn: BrokerConnection) -> None:
        """Just after a session started consuming: without a seat, it stops at once (what
        crossed the pause is run: the next poll has it)."""
        if self.seats.enabled and not self.seats.take():
            conn.pause(self.queue)
            self.seats.wait()

    def consume(self, conn: BrokerConnection) -> list[Delivery]:
        """Consumes the shared queue if this worker may: always without seats, with them
        while it holds one (it waits for one otherwise). Returns what crossed a pause."""
        seats = self.seats
        if seats.enabled and not (seats.keep() or seats.take()):
            crossed = []
            if conn.consuming(self.queue):
                conn.pause(self.queue)  # a substitute that stepped down
                crossed = conn.poll(0)
            seats.wait()
            return crossed
        if not conn.consuming(self.queue):
            conn.resume(self.queue)
        return []

    def leave(self, conn: BrokerConnection) -> None:
        """Stops consuming the shared queue for a while (a run that may take long): the seat
        goes to a worker that waits for one (also when the pause fails: a broken connection)."""
        try:
            conn.pause(self.queue)
        finally:
            self.seats.give_back()

    def make_way(self, conn: BrokerConnection) -> None:
        """A run goes on long (or will): the seat goes to a worker that waits for one, if any
        does (none: this worker keeps it, and the keeper asks again at its next tick). Leaving
        for nobody would only cost a pause and a resume a delivery."""
        if self.seats.seated and self.seats.others_waiting():
            self.leave(conn)

    def may_take_long(self, delivery: Delivery) -> bool:
        """Whether a delivery runs a function that is not known to be quick here (read from
        the unverified body: it only decides when to pause, the cycle verifies it)."""
        return any(self.pace.expect_slow(m) for m in envelope.peek(delivery.body))

    def known_long(self, delivery: Delivery) -> bool:
        return any(self.pace.known_long(m) for m in envelope.peek(delivery.body))

    def close(self) -> None:
        self.seats.close()

    def _wake(self) -> None:
        """A waiter thread got a seat: the main loop's poll returns, and it consumes."""
        conn = self._conn()
        if conn is not None:
            with suppress(DropletError):  # closed: the next session takes the seat up
                conn.call_soon_threadsafe(lambda: None)
