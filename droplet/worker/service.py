"""The worker process: an I/O thread that owns the broker connection, and the main thread that
runs functions (so SIGALRM time limits work, and a long function never starves heartbeats).

For each batch of deliveries the main thread runs the handlers, then hands the I/O thread the
messages to publish; it writes results to etcd meanwhile; the inbound deliveries are acked only
once every publish is confirmed and every result is stored.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from droplet.broker import dispatch
from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker.session import run_with_reconnect
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import shared_topology, worker_topology
from droplet.errors import DropletError
from droplet.outbox import Outbox
from droplet.proto import envelope, pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.kv import KV
from droplet.store.membership import Membership
from droplet.store.metadata import Metadata, parse_pin
from droplet.store.mirror import PrefixMirror
from droplet.store.values import ValueStore
from droplet.worker import dags, handlers
from droplet.worker.functions import FunctionCache
from droplet.worker.joins import ScheduleTable
from droplet.worker.library import UserLibrary

log = logging.getLogger(__name__)

Job = Callable[[BrokerConnection], None]


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerService:
    def __init__(
        self,
        settings: Settings,
        kv: KV,
        connect: ConnectionFactory,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.id = worker_id or default_worker_id()
        self.names = QueueNames(settings.namespace)
        self.signer = Signer(settings.signing_key)
        self.metadata = Metadata(kv, settings, self.signer)
        self.values = ValueStore(kv, settings)
        self._kv = kv
        self._connect = connect
        self.state = handlers.WorkerState(
            worker_id=self.id,
            names=self.names,
            functions=FunctionCache(self.metadata.get_function),
            library=UserLibrary(self.id, self.values),
            schedules=ScheduleTable(settings.schedule_ttl_s),
            pin_record=self._read_pin,
            default_time_limit_s=settings.function_time_limit_s,
        )
        self._inbox: queue.Queue[tuple[int, list[Delivery]]] = queue.Queue()
        self._jobs: deque[tuple[int, Job]] = deque()
        self._lock = threading.Lock()
        self._conn: BrokerConnection | None = None
        self._generation = 0
        self._exec_stop = threading.Event()
        self._io_stop = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._functions_mirror: PrefixMirror | None = None
        self._started_at = time.time()
        self._busy_s = 0.0
        self._window_start = time.monotonic()
        self._utilisation = 0.0
        self.membership = Membership(
            kv, self.metadata.keys.worker(self.id), settings.worker_lease_ttl_s,
            self._status_record, settings.status_interval_s,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        mirror = PrefixMirror(self._kv, self.metadata.keys.functions)
        mirror.on_change(lambda name, _value: self.state.functions.invalidate(name))
        self._functions_mirror = mirror.start()
        self._io_thread = threading.Thread(
            target=run_with_reconnect,
            args=(f"worker {self.id}", self._connect, self._io_session, self._io_stop),
            daemon=True,
            name="worker-io",
        )
        self._io_thread.start()
        self.membership.join()
        log.info("worker %s started", self.id)

    def run(self) -> None:
        """Runs functions on the calling thread until stop(); then shuts down cleanly."""
        self.start()
        try:
            self.serve()
        finally:
            self.shutdown()

    def serve(self) -> None:
        last_sweep = time.monotonic()
        while not self._exec_stop.is_set():
            try:
                generation, deliveries = self._inbox.get(timeout=0.5)
            except queue.Empty:
                generation, deliveries = 0, []
            while deliveries:
                try:
                    more_gen, more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more_gen != generation:
                    self._process(generation, deliveries)
                    generation, deliveries = more_gen, []
                deliveries.extend(more)
            if deliveries:
                self._process(generation, deliveries)
            if time.monotonic() - last_sweep > 5:
                last_sweep = time.monotonic()
                if freed := self.state.schedules.sweep():
                    log.info("freed %d abandoned DAG schedule joins", freed)

    def stop(self) -> None:
        self._exec_stop.set()

    def shutdown(self) -> None:
        """Lets the I/O thread finish pending publishes and acks, then leaves the fleet."""
        deadline = time.monotonic() + 5
        while self._jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        self._io_stop.set()
        if self._io_thread is not None:
            self._io_thread.join(timeout=5)
        if self._functions_mirror is not None:
            self._functions_mirror.close()
        self.membership.leave()
        log.info("worker %s stopped", self.id)

    # -- status ----------------------------------------------------------------------------

    def _read_pin(self) -> pb.PinRecord | None:
        raw = self._kv.get(self.metadata.keys.pin(self.id))
        return None if raw is None else parse_pin(raw)

    def _status_record(self) -> bytes:
        now = time.monotonic()
        window = now - self._window_start
        if window >= self.settings.status_interval_s:
            self._utilisation = min(1.0, self._busy_s / window)
            self._busy_s = 0.0
            self._window_start = now
        dag, function = self.state.pinned or ("", "")
        status = pb.WorkerStatus(
            id=self.id, host=socket.gethostname(), pid=os.getpid(),
            pinned_dag=dag, pinned_function=function,
            cached_keys=self.state.cached_keys, utilisation=self._utilisation,
            queue_depth=self._inbox.qsize(), started_at=self._started_at,
            updated_at=time.time(), calls_total=self.state.calls_total,
        )
        return status.SerializeToString()

    # -- the I/O thread --------------------------------------------------------------------

    def _io_session(self, conn: BrokerConnection) -> None:
        conn.declare(shared_topology(self.names))
        conn.declare(worker_topology(self.names, self.id))
        conn.consume(self.names.worker(self.id), prefetch=self.settings.own_queue_prefetch)
        conn.consume(self.names.work, prefetch=1)
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._conn = conn
        try:
            while not self._io_stop.is_set():
                deliveries = conn.poll(0.2)
                if deliveries:
                    self._inbox.put((generation, deliveries))
        finally:
            with self._lock:
                self._conn = None
                self._jobs.clear()

    def _submit(self, generation: int, job: Job) -> None:
        """Queues job(conn) for the I/O thread; dropped if that connection is gone (its
        deliveries are then redelivered by the broker)."""
        with self._lock:
            conn = self._conn
            if conn is None or generation != self._generation:
                return
            self._jobs.append((generation, job))
        try:
            conn.call_soon_threadsafe(self._run_jobs)
        except DropletError:
            log.debug("connection closed before a job could be scheduled")

    def _run_jobs(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    return
                generation, job = self._jobs.popleft()
                conn = self._conn
            if conn is not None and generation == self._generation:
                job(conn)

    # -- the main thread -------------------------------------------------------------------

    def _process(self, generation: int, deliveries: list[Delivery]) -> None:
        started = time.monotonic()
        out = Outbox()
        accepted: list[int] = []
        rejected: list[int] = []
        for delivery in deliveries:
            try:
                messages = envelope.decode(delivery.body, self.signer)
                for message in messages:
                    self._dispatch(message, delivery, out)
                accepted.append(delivery.tag)
            except Exception:
                log.exception("dead-lettering a message from %s", delivery.queue)
                rejected.append(delivery.tag)
        self._busy_s += time.monotonic() - started
        immediate = [o for o in out.sent if not o.after_store]
        later = [o for o in out.sent if o.after_store]
        gates: list[dispatch.AckGate] = []
        published = threading.Event()
        has_results = bool(out.results)

        def publish_now(conn: BrokerConnection) -> None:
            for tag in rejected:
                conn.reject(tag, requeue=False)
            gate = dispatch.AckGate(conn, accepted)
            gates.append(gate)
            dispatch.publish(conn, self.signer, immediate, gate)
            published.set()
            if not has_results:
                gate.release()

        self._submit(generation, publish_now)
        if not has_results:
            return
        # Replies first: the store write waits until they are on the wire, so it does not
        # compete with them for the interpreter.
        published.wait(0.5)
        stored = True
        try:
            self.values.write_results(out.results)
        except DropletError as exc:
            log.warning("could not store %d results (%s); they will be redelivered",
                        len(out.results), exc)
            stored = False

        def finish(conn: BrokerConnection) -> None:
            if not gates:
                return
            gate = gates[0]
            if stored:
                dispatch.publish(conn, self.signer, later, gate)
            else:
                gate.fail()
            gate.release()

        self._submit(generation, finish)

    def _dispatch(self, message: pb.Message, delivery: Delivery, out: Outbox) -> None:
        kind = message.WhichOneof("kind")
        state = self.state
        if kind == "call":
            handlers.exec_function(message.call, state, out)
        elif kind == "schedule":
            dags.on_schedule(message.schedule, state, out)
        elif kind == "trigger":
            dags.on_trigger(message.trigger, state, out)
        elif kind == "pin":
            if handlers.pin(message.pin, delivery.reply_to, delivery.correlation_id, state, out):
                self.membership.publish()
        elif kind == "unpin":
            if handlers.unpin(message.unpin, state):
                self.membership.publish()
        else:
            raise DropletError(f"unexpected {kind} message on a worker queue")
