"""Gathering a batch in the worker loop: the deliveries whose calls one invocation runs.

Before the message cycle takes a delivery with calls of a batching function, the worker takes
with it the deliveries that carry more calls of that function: those the broker has handed it
already, and whatever comes within the function's linger, until the batch is full. The batch
runs at once; the cycle then takes the deliveries one by one, and each call finds its outcome
in `WorkerState.batched` (batching.py says what joins a batch, and why).
"""

from __future__ import annotations

import logging
import threading
import time

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.broker_config.names import BATCHING_HEADER, RESENT_HEADER
from droplet.errors import StoreError
from droplet.signing import Signer
from droplet.worker import batching
from droplet.worker.handlers import WorkerState
from droplet.worker.keeper import ConnectionKeeper
from droplet.worker.status import StatusReport

log = logging.getLogger(__name__)


def maybe_run(delivery: Delivery) -> bool:
    """Whether the delivery's calls may have run already: redelivered, or sent again."""
    return delivery.redelivered or bool((delivery.headers or {}).get(RESENT_HEADER))


class BatchGatherer:
    def __init__(self, state: WorkerState, signer: Signer, status: StatusReport,
                 keeper: ConnectionKeeper) -> None:
        self.state = state
        self.signer = signer
        self.status = status
        self.keeper = keeper
        # While a gathered batch runs: its deliveries, which a long batch holds as claims.
        self.running: list[Delivery] = []
        self._pin_looked_at: tuple[str, str] | None = None  # see _pinned_batching

    def group(self, conn: BrokerConnection, first: Delivery, buffer: list[Delivery],
              buffer_lock: threading.Lock) -> list[Delivery]:
        """The delivery, and when it has calls of a batching function, the deliveries with more
        calls of it that the broker hands over (into `buffer`, taken out of it when they join)
        until the batch is full or its linger has passed; their batches are run before the
        cycle takes them one by one."""
        # No batching function known or marked (most workers): nothing to look into.
        if (not self.state.batching and BATCHING_HEADER not in (first.headers or ())
                and not self._pinned_batching()):
            return [first]
        group = [first]
        try:
            self._run_batches(conn, group, buffer, buffer_lock)
        except Exception as exc:  # etcd away, or worse: each call then runs alone, in the
            # cycle, which requeues or refuses it as it would any other
            log.warning("a batch could not be gathered or run (%s); its calls run alone", exc)
            self.state.batched.clear()
        return group

    def _pinned_batching(self) -> bool:
        """Whether the function pinned here was registered with batching=True (read once a
        pin). Its DAG steps come unmarked when the DAG does not list it in batching_functions
        (envelope.batches sees only that list), so until this worker's functions mirror told
        it, the first steps ran one by one: the race BATCHING_HEADER closes for calls."""
        pinned = self.state.pinned
        if pinned is None or pinned == self._pin_looked_at:
            return False
        try:
            function = self.state.functions.get(pinned[1])
        except StoreError:
            return False  # etcd away: looked at again with the next delivery
        except Exception:  # a body that does not verify or load: it fails when it runs
            function = None
        self._pin_looked_at = pinned
        if function is None or not function.spec.batching:
            return False
        self.state.batching.add(pinned[1])
        return True

    def _run_batches(self, conn: BrokerConnection, group: list[Delivery],
                     buffer: list[Delivery], buffer_lock: threading.Lock) -> None:
        gathering = batching.Gathering(self.state, self._batch_items(group[0]))
        if not gathering.items:
            return
        self.state.batching.update(gathering.items)  # its mirror may not have said so yet
        while not gathering.full():
            with buffer_lock:
                for delivery in list(buffer):
                    more = self._batch_items(delivery)
                    if more and gathering.wants(more):
                        buffer.remove(delivery)
                        group.append(delivery)
                        gathering.add(more)
                remaining = gathering.deadline - time.monotonic()
                if gathering.full() or remaining <= 0:
                    break
                # Lingering, it has calls in hand: its status says so, so that a scheduler
                # places a tagged call on an idle worker rather than behind this batch.
                self.status.in_hand = len(group) + len(buffer)
                buffer += conn.poll(remaining)
        self.status.in_hand = len(group) + len(buffer)
        started = time.monotonic()
        self.running = group
        try:
            with self.keeper.running():
                gathering.run()
        finally:
            self.running = []
        self.status.busy(time.monotonic() - started)

    def _batch_items(self, delivery: Delivery) -> dict[str, list[batching.BatchItem]]:
        return batching.items_of(delivery.body, self.signer, self.state, maybe_run(delivery))
