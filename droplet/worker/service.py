"""The worker process. The main thread does everything for a call: receive it, run it (so
SIGALRM time limits work), publish the outcome, store the result, ack. No hand-off between
threads on that path; a keeper thread services the broker connection only while a function
runs long (see keeper.py).

Inbound deliveries are acked only once every publish they caused is confirmed and every
result they produced is stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time

from droplet.broker import dispatch
from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker.session import run_with_reconnect
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import retry_topology, shared_topology, worker_topology
from droplet.errors import DropletError, PoisonMessageError, StoreError
from droplet.metrics import Metrics
from droplet.outbox import Outbox, Outgoing, fail_call, refusal_code, refuse
from droplet.proto import envelope, pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.kv import KV
from droplet.store.membership import Membership
from droplet.store.metadata import Metadata, parse_pin
from droplet.store.mirror import PrefixMirror
from droplet.store.values import ValueStore
from droplet.worker import dags, handlers
from droplet.worker.cache import ValueCache
from droplet.worker.claims import LongCallClaims
from droplet.worker.functions import FunctionCache
from droplet.worker.joins import ScheduleTable
from droplet.worker.keeper import ConnectionKeeper
from droplet.worker.library import UserLibrary
from droplet.worker.messaging import WorkerPort

log = logging.getLogger(__name__)

_SWEEP_INTERVAL_S = 5.0
_POLL_S = 0.5
_STORE_BACKOFF_S = 1.0
_MAILBOX_PREFETCH = 256


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
        self.cache = ValueCache(self.values, settings.cache_max_entries, settings.cache_max_bytes)
        self._kv = kv
        self._conn: BrokerConnection | None = None
        self.claims = LongCallClaims(kv, self.metadata.keys, self.id)
        self.keeper = ConnectionKeeper(
            deadline=lambda: self.state.deadline, hard_kill_grace_s=settings.hard_kill_grace_s,
            long_call_s=settings.long_call_s, on_long_call=self.claims.claim_in_hand,
        )
        self.port = WorkerPort(
            self.id, self.names, self.signer, self.keeper, lambda: self._conn,
            lambda worker: kv.get(self.metadata.keys.worker(worker)) is not None,
        )
        self.state = handlers.WorkerState(
            worker_id=self.id,
            names=self.names,
            functions=FunctionCache(self.metadata.get_function),
            library=UserLibrary(self.id, self.values, self.cache, self.port),
            schedules=ScheduleTable(settings.schedule_ttl_s),
            pin_record=self._read_pin,
            default_time_limit_s=settings.function_time_limit_s,
        )
        self._connect = connect
        self.metrics = Metrics("worker")
        self.state.observe = self._observe
        # Triggers whose destination worker is gone: their calls fail with WORKER_LOST.
        self._lost: list[pb.DagTrigger] = []
        self._stop = threading.Event()
        self._joined = False
        self._in_hand = 0  # deliveries being handled: the load the status reports
        self._declared: set[tuple[BrokerConnection, str]] = set()
        self._last_sweep = time.monotonic()
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

    def run(self) -> None:
        """Serves on the calling thread until stop(); then shuts down cleanly."""
        mirror = PrefixMirror(self._kv, self.metadata.keys.functions)
        mirror.on_change(lambda name, _value: self.state.functions.invalidate(name))
        self._functions_mirror = mirror.start()
        self.metrics.serve(self.settings.metrics_port)
        self.cache.start()
        self.keeper.start()
        try:
            run_with_reconnect(f"worker {self.id}", self._connect, self._session, self._stop)
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        """Gives up the pin and leaves the fleet; a scheduler then moves the pin and drains
        whatever is left in this worker's queue."""
        self.keeper.stop()
        self.cache.close()
        if self._functions_mirror is not None:
            self._functions_mirror.close()
        pin = self._read_pin_quietly()
        if pin is not None:
            self.metadata.release_pin(pin)
        self.membership.leave()
        log.info("worker %s stopped", self.id)

    def _join_fleet(self) -> None:
        """Once the worker's queue exists: alive under a lease, and listed for good (no
        lease) until a scheduler has drained its queue after its death."""
        self.membership.join()
        token = f"{socket.gethostname()} {os.getpid()} {self._started_at}".encode()
        self._kv.put(self.metadata.keys.fleet_member(self.id), token)
        self._joined = True
        log.info("worker %s started", self.id)

    def _session(self, conn: BrokerConnection) -> None:
        conn.declare(shared_topology(self.names))
        conn.declare(worker_topology(self.names, self.id))
        conn.consume(self.names.worker(self.id), prefetch=self.settings.own_queue_prefetch)
        conn.consume(self.names.work, prefetch=1)
        conn.consume(self.names.inbox(self.id), prefetch=_MAILBOX_PREFETCH)
        if not self._joined:
            self._join_fleet()
        self.port.mailbox.clear()  # unacked: the broker has them back after a reconnect
        self.port.stash.clear()
        self._conn = conn
        try:
            with self.keeper.attached(conn):
                while not self._stop.is_set():
                    deliveries, self.port.stash = self.port.stash, []
                    if not deliveries:
                        with self.keeper.using():
                            deliveries = conn.poll(_POLL_S)
                    deliveries = self.port.sort(deliveries)
                    if deliveries:
                        self._process(conn, deliveries)
                    if self._lost:
                        self._fail_lost(conn)
                    self._sweep()
        finally:
            self._conn = None

    def _sweep(self) -> None:
        if time.monotonic() - self._last_sweep > _SWEEP_INTERVAL_S:
            self._last_sweep = time.monotonic()
            if freed := self.state.schedules.sweep():
                log.info("freed %d abandoned DAG schedule joins", freed)

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
            cached_keys=self.cache.keys(), utilisation=self._utilisation,
            queue_depth=self._in_hand + len(self.port.stash), started_at=self._started_at,
            updated_at=time.time(), calls_total=self.state.calls_total,
            errors_total=self.state.errors_total, metrics_port=self.metrics.port,
        )
        return status.SerializeToString()

    # -- handling ----------------------------------------------------------------------------

    def _process(self, conn: BrokerConnection, deliveries: list[Delivery]) -> None:
        started = time.monotonic()
        self._in_hand = len(deliveries)
        out = Outbox()
        accepted: list[int] = []
        rejected: list[int] = []
        requeued: list[int] = []
        with self.keeper.running(), self.claims.holding(deliveries):
            for delivery in deliveries:
                try:
                    self._check_redeliveries(delivery)
                    messages = envelope.decode(delivery.body, self.signer)
                    for message in messages:
                        self._dispatch(message, delivery, out)
                    accepted.append(delivery.tag)
                except StoreError as exc:
                    log.warning("etcd is unavailable (%s); the message goes back", exc)
                    requeued.append(delivery.tag)
                except Exception as exc:
                    if not isinstance(exc, DropletError):
                        log.exception("handling a message from %s failed", delivery.queue)
                    log.warning("dead-lettering a message from %s: %s", delivery.queue, exc)
                    code = refusal_code(exc)
                    self.metrics.error(pb.ErrorCode.Name(code))
                    refuse(out, envelope.peek(delivery.body), delivery.reply_to,
                           delivery.correlation_id, code, f"refused: {exc}")
                    rejected.append(delivery.tag)
        self._busy_s += time.monotonic() - started
        self._in_hand = 0
        claimed = self.claims.take()  # acked during a long call: not to be settled again
        if requeued:
            with self.keeper.using():
                for tag in requeued:
                    if tag not in claimed:
                        conn.reject(tag, requeue=True)
            time.sleep(_STORE_BACKOFF_S)  # etcd is away: do not spin on the same messages
        done = self._commit(conn, out, [t for t in accepted if t not in claimed],
                            [t for t in rejected if t not in claimed])
        if claimed:
            with self.keeper.using():
                self.claims.settle(conn, claimed, deliveries, done and not requeued)

    def _check_redeliveries(self, delivery: Delivery) -> None:
        """Counts deliveries of a redelivered message across the fleet; past the limit it is
        poison (it keeps killing its worker) and goes to the dead-letter queue."""
        if not delivery.redelivered:
            return
        key = self.metadata.keys.delivery_count(hashlib.sha1(delivery.body).hexdigest())
        count = int(self._kv.get(key) or b"0") + 1
        self._kv.put(key, str(count).encode(), self.values.expiry.current())
        limit = self.settings.dead_letter_max_redeliveries
        if count > limit:
            raise PoisonMessageError(
                f"delivered {count} times without completing (limit {limit}): it may crash "
                "the worker that runs it"
            )

    def _fail_lost(self, conn: BrokerConnection) -> None:
        triggers, self._lost = self._lost, []
        out = Outbox()
        failed: set[str] = set()
        for trigger in triggers:
            if trigger.call.call_id and trigger.call.call_id not in failed:
                failed.add(trigger.call.call_id)
                fail_call(out, trigger.call, pb.WORKER_LOST,
                          f"the worker that held {trigger.target_function!r} is gone")
        self._commit(conn, out, [], [])

    def _commit(
        self, conn: BrokerConnection, out: Outbox, accepted: list[int], rejected: list[int]
    ) -> bool:
        """Publishes the outbox (replies first), stores results, and acks `accepted` once
        both are safe; a failed store requeues them instead (and returns False). The writes
        of MULTI calls that ended are committed first, so their replies never run ahead."""
        try:
            for writes, deletes in out.commits:
                self.values.put_values(writes, deletes=deletes)
        except DropletError as exc:
            log.warning("could not commit a MULTI call's writes (%s); it will be redelivered",
                        exc)
            with self.keeper.using():
                for tag in accepted:
                    conn.reject(tag, requeue=True)
            return False
        immediate = [o for o in out.sent if not o.after_store]
        later = [o for o in out.sent if o.after_store]
        with self.keeper.using():
            self._declare_retry_queues(conn, out)
            for tag in rejected:
                conn.reject(tag, requeue=False)
            gate = dispatch.AckGate(conn, accepted)
            dispatch.publish(conn, self.signer, immediate, gate, on_lost=self._on_lost)
            if not out.results:
                gate.release()
                return True
        stored = True
        try:
            self.values.write_results(out.results)
        except DropletError as exc:
            log.warning("could not store %d results (%s); they will be redelivered",
                        len(out.results), exc)
            stored = False
        with self.keeper.using():
            if stored:
                dispatch.publish(conn, self.signer, later, gate)
            else:
                gate.fail()
            gate.release()
        return stored

    def _declare_retry_queues(self, conn: BrokerConnection, out: Outbox) -> None:
        """Retry queues are declared when first needed (a few per namespace at most)."""
        for item in out.sent:
            delay_ms = self.names.retry_delay_ms(item.queue)
            if delay_ms is not None and (conn, item.queue) not in self._declared:
                conn.declare(retry_topology(self.names, delay_ms))
                self._declared.add((conn, item.queue))

    def _on_lost(self, items: list[Outgoing]) -> bool:
        """A batch found no queue: triggers for a dead worker fail their calls instead of
        being retried forever; anything else is retried through a requeue."""
        triggers = [i.message.trigger for i in items if i.message.WhichOneof("kind") == "trigger"]
        if len(triggers) != len(items):
            return False
        self._lost.extend(triggers)
        return True

    def _observe(self, function: str, seconds: float, value: pb.Value) -> None:
        self.metrics.run_seconds.labels(function).observe(seconds)
        if value.type == pb.ERROR:
            info = pb.ErrorInfo()
            info.ParseFromString(value.body)
            self.metrics.error(pb.ErrorCode.Name(info.code))

    def _dispatch(self, message: pb.Message, delivery: Delivery, out: Outbox) -> None:
        kind = message.WhichOneof("kind")
        self.metrics.message(kind or "empty")
        state = self.state
        if kind == "call":
            handlers.exec_function(message.call, state, out, delivery.redelivered)
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
