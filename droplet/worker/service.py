"""The worker process: a thin loop around the message cycle (cycle.py) and the handlers.

The main thread does everything for a delivery: receive it, run it (so SIGALRM time limits
work), commit its outcome, ack. It takes one delivery at a time and ends each before the next,
so no result waits for other calls. A keeper thread services the broker connection only while
a function runs long (see keeper.py).

Idle first: the worker consumes its own queue (pinned DAG steps, pins) and the shared work
queue with prefetch 1. Before it starts a step from its own queue it pauses the shared
consumer (and runs first whatever the broker handed it before the pause took effect), so a
worker busy with a step is never handed a plain call while another worker sits idle; it
consumes the shared queue again once its own queue is drained. During a long call it stops
consuming altogether and holds what it has as claims (claims.py). On a host with more
workers than cores, a worker consumes the shared queue only while it holds one of the host's
seats (seats.py): it gives its seat back whenever it stops consuming, and a run that goes on
past 20 ms stops it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from droplet import resources
from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker.session import run_with_reconnect
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import (
    priorities_note,
    retry_topology,
    shared_topology,
    worker_topology,
)
from droplet.cycle import Cycle
from droplet.errors import DropletError
from droplet.metrics import Metrics, MetricsMiddleware
from droplet.middleware import Chain, Middleware
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.commits import Committer
from droplet.store.kv import KV
from droplet.store.membership import Membership
from droplet.store.metadata import Metadata
from droplet.store.mirror import PrefixMirror
from droplet.store.values import ValueStore
from droplet.tracing import Tracing
from droplet.worker import batching, handlers, tags
from droplet.worker.cache import ValueCache
from droplet.worker.claims import LongCallClaims
from droplet.worker.dispatch import dispatch
from droplet.worker.functions import FunctionCache
from droplet.worker.gatherer import BatchGatherer
from droplet.worker.intake import SharedIntake
from droplet.worker.joins import JoinRecords
from droplet.worker.keeper import ConnectionKeeper
from droplet.worker.library import Library
from droplet.worker.messaging import WorkerPort
from droplet.worker.pace import Pace
from droplet.worker.poison import PoisonCounter
from droplet.worker.slots import RunSlots
from droplet.worker.status import CPUS, StatusReport

log = logging.getLogger(__name__)

_POLL_S = 0.5
_STORE_BACKOFF_S = 1.0
# After a step of its own queue that may take long, how long the steps it sent to this
# worker may take to come (a broker round trip) before it takes plain calls again.
_OWN_FIRST_S = 0.02
_DELIVERY_COUNT_TTL_S = 3600


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerService:
    def __init__(self, settings: Settings, kv: KV, connect: ConnectionFactory,
                 worker_id: str | None = None, middleware: Sequence[Middleware] = ()) -> None:
        self.settings = settings
        self.id = worker_id or default_worker_id()
        self.incarnation = uuid.uuid4().hex
        self.names = QueueNames.of(settings)
        self._own_queue = self.names.worker(self.id)
        self.signer = Signer(settings.signing_key)
        self.metadata = Metadata(kv, settings, self.signer)
        self.keys = self.metadata.keys
        self.values = ValueStore(kv, settings, self.signer)
        self.committer = Committer(self.values, settings.etcd_max_txn_ops)
        self.cache = ValueCache(self.values, settings.cache_max_entries, settings.cache_max_bytes)
        self._kv, self._connect = kv, connect
        self._conn: BrokerConnection | None = None
        self._cycle: Cycle | None = None
        self.keeper = ConnectionKeeper(
            deadline=self._deadline, hard_kill_grace_s=settings.hard_kill_grace_s,
            long_call_s=settings.long_call_s, on_long_call=self._go_long,
            flush=self._during_a_long_run,
            # A held run slot is given back at the keeper's busy pace (20 ms), not at its
            # next idle tick (up to interval_s): the others wait for it (slots.py).
            # So is a seat at the shared queue (seats.py): the waiting workers want it.
            pending=lambda: self.slots.held or self.intake.seats.seated or (
                self._cycle is not None and self._cycle.has_pending()),
            on_busy=lambda: self.membership.publish(),
        )
        self.port = WorkerPort(self.id, self.names, self.signer, self.keeper, lambda: self._conn,
                               lambda worker: kv.get(self.keys.worker(worker)) is not None,
                               settings.max_message_bytes)
        self.claims = LongCallClaims(kv, self.keys, self.names, self.id, self.incarnation,
                                     lambda: self._conn)
        self.metrics = Metrics("worker")
        self.pace = Pace()
        self.state = handlers.WorkerState(
            worker_id=self.id, names=self.names, keys=self.keys,
            functions=FunctionCache(self.metadata.get_function),
            library=Library(self.id, self.values, self.cache, self.port),
            joins=JoinRecords(kv, self.keys, self.signer),
            stored_outcome=self.values.outcome,
            pin_record=lambda: self.metadata.pin_of(self.id),
            dag_record=self.metadata.get_dag,
            default_time_limit_s=settings.function_time_limit_s,
            multi_max_attempts=settings.multi_max_attempts,
            schedule_ttl_s=settings.schedule_ttl_s,
            max_message_bytes=settings.max_message_bytes,
            middleware=Chain([MetricsMiddleware(self.metrics), self.pace, *middleware]),
            tracing=Tracing(settings.tracing, "droplet-worker"),
            resources=resources.parse(settings.worker_resources),
        )
        self.poison = PoisonCounter(kv, self.keys, self.values.leases,
                                    settings.dead_letter_max_redeliveries)
        self.status = StatusReport(self.state, self.cache, self.incarnation,
                                   settings.status_interval_s, self.state.pin_record,
                                   lambda: self.metrics.port, self.keeper.busy_since,
                                   self.pace.quick_functions, self.pace.slow_functions)
        self.membership = Membership(kv, self.keys.worker(self.id), settings.worker_lease_ttl_s,
                                     self.status.record, settings.status_interval_s,
                                     on_register=self._list_in_fleet)
        self._stop = threading.Event()
        self._joined = False
        self._buffer: list[Delivery] = []
        self._buffer_lock = threading.Lock()
        self._long = False  # consumers stopped for a long call
        self._declared: set[tuple[int, str]] = set()
        self._functions_mirror: PrefixMirror | None = None
        self._current: Delivery | None = None  # the delivery being run (for long calls)
        self._gathered: list[Delivery] = []  # taken with it for a batch, not run yet
        self._after_own_step = False  # paused for a step of its own queue (_next)
        self.gatherer = BatchGatherer(self.state, self.signer, self.status, self.keeper)
        self.slots = RunSlots(CPUS if settings.run_slots < 0 else settings.run_slots)
        self.intake = SharedIntake(self.names.work, self.pace)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Serves on the calling thread until stop(); then shuts down cleanly."""
        mirror = PrefixMirror(self._kv, self.keys.functions)
        mirror.on_change(self._function_changed)
        self._functions_mirror = mirror.start()
        self.metrics.serve(self.settings.metrics_port)
        self.cache.start()
        self.state.cancels.start(self._kv, self.keys.cancels)
        self.keeper.start()
        seats = self.slots.count if self.settings.queue_seats < 0 else self.settings.queue_seats
        if seats > 0 and threading.current_thread() is threading.main_thread():
            self.intake.take_up_seats(seats, f"{self.settings.broker_url}|{self.names.work}",
                                      lambda: self._conn)
        try:
            run_with_reconnect(f"worker {self.id}", self._connect, self._session, self._stop)
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _function_changed(self, name: str, value: bytes | None) -> None:
        self.state.functions.invalidate(name)
        if batching.batches(value):
            self.state.batching.add(name)

    def shutdown(self) -> None:
        """Gives up the pin and leaves the fleet; a scheduler then moves the pin and drains
        whatever is left in this worker's queue."""
        self.keeper.stop()
        self.slots.close()
        self.intake.close()
        self.cache.close()
        self.state.cancels.close()
        if self._functions_mirror is not None:
            self._functions_mirror.close()
        try:
            pin = self.metadata.pin_of(self.id)
            if pin is not None:
                self.metadata.release_pin(pin)
        except DropletError as exc:
            log.warning("could not give up the pin: %s", exc)
        self.membership.leave()
        log.info("worker %s stopped", self.id)

    def _deadline(self) -> float | None:
        """When the running function is past its time limit, or was cancelled: the keeper
        exits the worker if it goes on hard_kill_grace_s beyond."""
        due = [d for d in (self.state.deadline, self.state.cancels.deadline()) if d is not None]
        return min(due, default=None)

    def join_fleet(self) -> None:
        """Once the worker's queue exists: alive under a lease, and listed for good (no
        lease) until a scheduler has drained its queue after its death. A pin recorded for
        this id (a restart under the same id) is taken up again, unless its function needs
        tags this worker no longer has: then it is given up, and pinned again elsewhere."""
        pin = self.metadata.pin_of(self.id)
        if pin is not None and not self._pin_fits(pin):
            log.warning("giving up the pin of %s/%s: it needs tags this worker lacks",
                        pin.dag_name, pin.function_name)
            self.metadata.release_pin(pin)
            pin = None
        if pin is not None:
            self.state.pinned = (pin.dag_name, pin.function_name)
        if self.membership.taken():
            log.warning("worker id %s is registered already: if another worker runs under it, "
                        "stop one (two share one queue and one pin); if it was killed, ignore "
                        "this (its lease ends within %ss)", self.id,
                        self.settings.worker_lease_ttl_s)
        self.membership.join()
        self._list_in_fleet()
        self._joined = True
        log.info("worker %s started (incarnation %s)", self.id, self.incarnation[:8])
        if note := priorities_note(self.names):
            log.warning(note)

    def _pin_fits(self, pin: pb.PinRecord) -> bool:
        record = self.metadata.get_dag(pin.dag_name)
        return record is None or tags.fits(record.dag, pin.function_name, self.state)

    def _list_in_fleet(self) -> None:
        """The fleet entry a scheduler goes by to settle this worker's queue if it dies: put
        again at every (re-)registration, since a scheduler removes it when the worker
        looked dead (a process paused past its lease that then came back)."""
        token = f"{socket.gethostname()} {os.getpid()} {self.incarnation}".encode()
        self._kv.put(self.keys.fleet_member(self.id), token)

    def _session(self, conn: BrokerConnection) -> None:
        try:
            cycle = self.open_session(conn)
            with self.keeper.attached(conn):
                while not self._stop.is_set():
                    self.serve_once(conn, cycle, _POLL_S)
        finally:
            self._conn = None
            # A seat held while reconnecting would keep the shared queue from the workers
            # that wait for one (until it looked stuck): the next session takes one again.
            self.intake.seats.give_back()

    def open_session(self, conn: BrokerConnection) -> Cycle:
        """Declares, consumes and joins; returns the cycle for serve_once (tests drive these
        two directly over the stub broker)."""
        conn.declare(shared_topology(self.names))
        conn.declare(worker_topology(self.names, self.id))
        conn.consume(self.names.worker(self.id), prefetch=self.settings.own_queue_prefetch)
        conn.consume(self.names.work, prefetch=1)
        self.intake.opened(conn)
        if not self._joined:
            self.join_fleet()
        else:
            self._list_in_fleet()
        with self._buffer_lock:
            # Unacked deliveries: the broker has them back after a reconnect. Those acked and
            # held as claims (a long call) are ours alone: they stay to be run.
            self._buffer = [d for d in self._buffer if d.claim]
            kept = {d.claim for d in self._buffer}
        if recovered := self.claims.recover(conn, kept):
            log.info("%d long calls cut off by a lost connection go back to their queues",
                     recovered)
        self.poison.session_ended()  # what the last one had not seen confirmed still counts
        self._long = False
        self._conn = conn
        self._cycle = Cycle(conn, self.signer, self.names, self.committer,
                            middleware=self.state.middleware, admit=self.poison.admit,
                            settlement=self.claims,
                            prepare=lambda queue: self._prepare(conn, queue),
                            expect_slow=self.pace.expect_slow,
                            max_bytes=self.settings.max_message_bytes)
        return self._cycle

    # -- the loop --------------------------------------------------------------------------

    def serve_once(self, conn: BrokerConnection, cycle: Cycle, timeout_s: float) -> bool:
        """Takes and ends one delivery (waiting up to timeout_s); False when none came."""
        if self._long:
            self._long = False
            conn.resume(self.names.worker(self.id))
            if not self.intake.seats.enabled:  # (with seats: once one is held, _next)
                conn.resume(self.names.work)
        delivery = self._next(conn, timeout_s)
        self.poison.settle()  # (the poll ran the confirms it read)
        if delivery is None:
            return False
        group = self.gatherer.group(conn, delivery, self._buffer, self._buffer_lock)
        intake = self.intake
        if self.slots.enabled and not any(intake.may_take_long(d) for d in group):
            self.slots.take()  # quick work: a core of its own, or a wait off the run queue
        elif intake.seats.seated and any(intake.known_long(d) for d in group):
            intake.make_way(conn)  # a waiting worker takes its seat and the next calls
        try:
            for index, taken in enumerate(group):
                self._gathered = group[index + 1:]
                started = time.monotonic()
                self.status.in_hand = 1 + len(self._buffer)
                try:
                    gate = cycle.run(taken, self._dispatch)
                except BaseException:
                    # The session ends with it (a broker error): its count stays, as for a
                    # worker that died on it, since the message itself may be what closes the
                    # connection each time; a fault of the broker's adds one count only.
                    self.poison.forget(taken)
                    raise
                self.poison.ran(taken, gate)
                self.status.busy(time.monotonic() - started)
                self.status.in_hand = len(self._buffer)
                if gate.store_unavailable:
                    self.slots.give_back()
                    time.sleep(_STORE_BACKOFF_S)  # etcd is away: do not spin on a message
        finally:
            self.slots.give_back()
            self._gathered = []
            self.state.batched.clear()  # what a refused or requeued delivery left unused
        return True

    def _next(self, conn: BrokerConnection, timeout_s: float) -> Delivery | None:
        """The next delivery to run: what the shared queue handed over first (it came while this
        worker was idle), then its own queue. Before a step that may take a while, the shared
        consumer is paused (and what crossed the pause runs first), so no plain call is handed
        to a worker busy with one."""
        own, work = self._own_queue, self.names.work
        with self._buffer_lock:
            asked = False  # whether the shared queue was taken up (or a seat asked for)
            if not self._buffer and not conn.consuming(work):
                # Paused for a run that went long (or a long step): unless steps of its own
                # queue come, it consumes again (or waits for a seat) before it waits on the
                # connection, not after. Only after a step of its own queue does it give the
                # steps that one sent a round trip to come: waiting so after every slow call
                # cost 2 workers 8 ms a call (200 sequential 3 ms calls: 2.6 s, not 1.0 s).
                self._buffer += conn.poll(_OWN_FIRST_S if self._after_own_step else 0)
                self._after_own_step = False
                if not self._buffer:
                    self._buffer += self.intake.consume(conn)
                    asked = True
            if not self._buffer:
                self._buffer += conn.poll(timeout_s)
            mine = [d for d in self._buffer if d.queue == own]
            if not mine:
                if not asked:  # (once a turn: without a seat it costs lock calls)
                    self._buffer += self.intake.consume(conn)
            elif conn.consuming(work) and any(
                    self.intake.may_take_long(d) for d in mine):
                self.intake.leave(conn)
                self._after_own_step = True
                self._buffer += conn.poll(0)
            if not self._buffer:
                return None
            for index, taken in enumerate(self._buffer):
                if taken.queue != own:
                    return self._buffer.pop(index)
            return self._buffer.pop(0)

    def _during_a_long_run(self) -> None:
        """On the keeper thread, a run has gone on 20 ms (and at each tick after): its seat
        goes to a worker waiting for one, the calls of its delivery not started yet go to idle
        workers, and what is done is committed (cycle.py)."""
        self.slots.give_back()  # it sleeps, waits or computes long: another worker's turn
        conn = self._conn  # (the keeper has it while a function runs)
        if conn is not None:
            self.intake.make_way(conn)
        cycle = self._cycle
        if cycle is not None:
            cycle.hand_back_rest(self.intake.seats.others_waiting)
            cycle.flush_pending()

    def _go_long(self, conn: BrokerConnection) -> None:
        """On the keeper thread, a call has run long_call_s: stop consuming, and hold what is
        in hand as claims (the broker's consumer timeout never cuts them off)."""
        with self._buffer_lock:
            self.intake.leave(conn)
            conn.pause(self.names.worker(self.id))
            self._buffer += conn.poll(0)
            self._long = True
            in_hand = [d for d in [self._current, *self._gathered, *self.gatherer.running,
                                   *self._buffer] if d is not None]
            self.claims.hold(conn, in_hand)

    def _dispatch(self, message: pb.Message, delivery: Delivery, _env: pb.Envelope,
                  out: Outbox) -> None:
        self._current = delivery  # (held as a claim if the run goes long: _go_long)
        try:
            dispatch(message, delivery, self.state, out, self.keeper, self.membership.publish)
        finally:
            self._current = None

    def _prepare(self, conn: BrokerConnection, queue: str) -> None:
        """Retry queues are declared when first needed (a few per namespace at most)."""
        delay_ms = self.names.retry_delay_ms(queue)
        if delay_ms is not None and (id(conn), queue) not in self._declared:
            conn.declare(retry_topology(self.names, delay_ms))
            self._declared.add((id(conn), queue))
