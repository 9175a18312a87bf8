"""The worker process: the main thread runs functions (so SIGALRM time limits work) while an
I/O thread owns the broker connection (so a long function never starves heartbeats).

For each batch of deliveries the main thread runs the handlers, hands the I/O thread the
messages to publish, then writes results to etcd; the inbound deliveries are acked only once
every publish is confirmed and every result is stored.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time

from droplet.broker import dispatch
from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import shared_topology, worker_topology
from droplet.errors import DropletError
from droplet.outbox import Outbox, Outgoing, fail_call
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
from droplet.worker.io_thread import IoThread
from droplet.worker.joins import ScheduleTable
from droplet.worker.library import UserLibrary

log = logging.getLogger(__name__)

_SWEEP_INTERVAL_S = 5.0
_READY_TIMEOUT_S = 30.0


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
        # Triggers whose destination worker is gone: their calls fail with WORKER_LOST.
        self._lost: queue.Queue[list[pb.DagTrigger]] = queue.Queue()
        self._stop = threading.Event()
        self.io = IoThread(f"worker {self.id}", connect, self._setup_connection,
                           lambda gen, ds: self._inbox.put((gen, ds)))
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
        self.io.start()
        if not self.io.ready.wait(_READY_TIMEOUT_S):
            log.warning("no broker connection yet; joining the fleet anyway")
        self.membership.join()
        # Listed for good (no lease) until a scheduler has drained this worker's queue.
        token = f"{socket.gethostname()} {os.getpid()} {self._started_at}".encode()
        self._kv.put(self.metadata.keys.fleet_member(self.id), token)
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
        while not self._stop.is_set():
            batch = self._next_batch(timeout_s=0.5)
            if batch is not None:
                self._process(*batch)
            while not self._lost.empty():
                self._fail_lost(self._lost.get_nowait())
            if time.monotonic() - last_sweep > _SWEEP_INTERVAL_S:
                last_sweep = time.monotonic()
                if freed := self.state.schedules.sweep():
                    log.info("freed %d abandoned DAG schedule joins", freed)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        """Finishes pending publishes and acks, gives up the pin, and leaves the fleet; a
        scheduler then moves the pin and drains whatever is left in this worker's queue."""
        self.io.stop()
        if self._functions_mirror is not None:
            self._functions_mirror.close()
        pin = self._read_pin_quietly()
        if pin is not None:
            self.metadata.release_pin(pin)
        self.membership.leave()
        log.info("worker %s stopped", self.id)

    def _next_batch(self, timeout_s: float) -> tuple[int, list[Delivery]] | None:
        """Everything waiting from one connection, so it is handled (and acked) together."""
        try:
            generation, deliveries = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return None
        while not self._inbox.empty():
            more_generation, more = self._inbox.queue[0]
            if more_generation != generation:
                break
            self._inbox.get_nowait()
            deliveries.extend(more)
        return generation, deliveries

    # -- status ----------------------------------------------------------------------------

    def _read_pin(self) -> pb.PinRecord | None:
        raw = self._kv.get(self.metadata.keys.pin(self.id))
        return None if raw is None else parse_pin(raw)

    def _read_pin_quietly(self) -> pb.PinRecord | None:
        try:
            return self._read_pin()
        except DropletError:
            return None

    def _status_record(self) -> bytes:
        """The status published under the lease; also where a stale local pin is dropped
        (a scheduler moved it while this worker was cut off from etcd)."""
        now = time.monotonic()
        window = now - self._window_start
        if window >= self.settings.status_interval_s:
            self._utilisation = min(1.0, self._busy_s / window)
            self._busy_s = 0.0
            self._window_start = now
        if self.state.pinned is not None:
            try:
                record = self._read_pin()
            except DropletError:
                record = pb.PinRecord(dag_name=self.state.pinned[0],
                                      function_name=self.state.pinned[1])  # unknown: keep it
            if record is None or (record.dag_name, record.function_name) != self.state.pinned:
                log.warning("pin %s was moved away from this worker", self.state.pinned)
                self.state.pinned = None
        dag, function = self.state.pinned or ("", "")
        status = pb.WorkerStatus(
            id=self.id, host=socket.gethostname(), pid=os.getpid(),
            pinned_dag=dag, pinned_function=function,
            cached_keys=self.state.cached_keys, utilisation=self._utilisation,
            queue_depth=self._inbox.qsize(), started_at=self._started_at,
            updated_at=time.time(), calls_total=self.state.calls_total,
            errors_total=self.state.errors_total,
        )
        return status.SerializeToString()

    # -- the main thread -------------------------------------------------------------------

    def _setup_connection(self, conn: BrokerConnection) -> None:
        """Runs on the I/O thread for each (re)connection."""
        conn.declare(shared_topology(self.names))
        conn.declare(worker_topology(self.names, self.id))
        conn.consume(self.names.worker(self.id), prefetch=self.settings.own_queue_prefetch)
        conn.consume(self.names.work, prefetch=1)

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
        self._commit(generation, out, accepted, rejected)

    def _fail_lost(self, triggers: list[pb.DagTrigger]) -> None:
        out = Outbox()
        failed: set[str] = set()
        for trigger in triggers:
            if trigger.call.call_id and trigger.call.call_id not in failed:
                failed.add(trigger.call.call_id)
                fail_call(out, trigger.call, pb.WORKER_LOST,
                          f"the worker that held {trigger.target_function!r} is gone")
        self._commit(self.io.generation, out, [], [])

    def _commit(
        self, generation: int, out: Outbox, accepted: list[int], rejected: list[int]
    ) -> None:
        """Publishes the outbox, stores results, and acks `accepted` once both are safe."""
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
            dispatch.publish(conn, self.signer, immediate, gate, on_lost=self._on_lost)
            published.set()
            if not has_results:
                gate.release()

        self.io.submit(generation, publish_now)
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
            if stored:
                dispatch.publish(conn, self.signer, later, gates[0])
            else:
                gates[0].fail()
            gates[0].release()

        self.io.submit(generation, finish)

    def _on_lost(self, items: list[Outgoing]) -> bool:
        """A batch found no queue: triggers for a dead worker fail their calls instead of
        being retried forever; anything else is retried through a requeue."""
        triggers = [i.message.trigger for i in items if i.message.WhichOneof("kind") == "trigger"]
        if len(triggers) != len(items):
            return False
        self._lost.put(triggers)
        return True

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
