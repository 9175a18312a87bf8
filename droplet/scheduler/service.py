"""The scheduler process: thin loops around the handlers in calls.py and dags.py.

Two consume loops, each on its own broker connection: the call loop (FunctionCall, DagCall:
fast, never blocks) and the admin loop (Function, Dag, DeleteDag: may wait on pin replies).
Fleet state comes from etcd mirrors, so the call path reads nothing from etcd.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid

from droplet.broker import dispatch
from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker.session import run_with_reconnect
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import shared_topology
from droplet.errors import DropletError
from droplet.metrics import Metrics
from droplet.outbox import Outbox, refusal_code, refuse
from droplet.proto import envelope, pb
from droplet.scheduler import calls, dags, healing, policy
from droplet.scheduler.pinning import BrokerPins
from droplet.scheduler.reaper import Reaper
from droplet.scheduler.state import SchedulerState
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.kv import KV
from droplet.store.membership import Membership
from droplet.store.metadata import Metadata, parse_dag_record, parse_pin, parse_worker
from droplet.store.mirror import PrefixMirror
from droplet.store.values import ValueStore

log = logging.getLogger(__name__)

_CALL_PREFETCH = 256
_RECONCILE_INTERVAL_S = 2.0
_ADMIN_KINDS = {"function", "dag", "delete_dag"}
_WORK_CHUNK_MAX = 16


class SchedulerService:
    def __init__(
        self,
        settings: Settings,
        kv: KV,
        connect: ConnectionFactory,
        scheduler_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.id = scheduler_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.names = QueueNames(settings.namespace)
        self.signer = Signer(settings.signing_key)
        self.state = SchedulerState(self.names, scheduler_id=self.id)
        self.metadata = Metadata(kv, settings, self.signer)
        self.values = ValueStore(kv, settings)
        self._kv = kv
        self._connect = connect
        self._stop = threading.Event()
        self._fleet_changed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mirrors: list[PrefixMirror] = []
        self._started_at = time.time()
        self.membership = Membership(
            kv, self.metadata.keys.scheduler(self.id), settings.worker_lease_ttl_s, self._record
        )
        self.reaper = Reaper(connect, self.names, self.signer, self.state, kv, self.values,
                             lambda: self.membership.lease_id)
        self.metrics = Metrics("scheduler")
        self._inspector: BrokerConnection | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        keys = self.metadata.keys
        self._mirror(keys.workers, self._on_worker)
        self._mirror(keys.pins, self._on_pin)
        self._mirror(keys.dags, self._on_dag)
        self._mirror(keys.schedulers, self._on_scheduler)
        self.metrics.serve(self.settings.metrics_port)
        self.membership.join()
        for name, session in (("calls", self._calls_session), ("admin", self._admin_session)):
            thread = threading.Thread(
                target=run_with_reconnect,
                args=(f"scheduler {name}", self._connect, session, self._stop),
                daemon=True,
                name=f"scheduler-{name}",
            )
            thread.start()
            self._threads.append(thread)
        log.info("scheduler %s started", self.id)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for mirror in self._mirrors:
            mirror.close()
        self.membership.leave()

    def _record(self) -> bytes:
        status = pb.SchedulerStatus(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), started_at=self._started_at,
            metrics_port=self.metrics.port,
        )
        return status.SerializeToString()

    def _mirror(self, prefix: str, listener: object) -> None:
        mirror = PrefixMirror(self._kv, prefix)
        mirror.on_change(listener)  # type: ignore[arg-type]
        mirror.start()
        self._mirrors.append(mirror)

    def _track_revision(self) -> None:
        self.state.revision = max([self.state.revision, *(m.revision for m in self._mirrors)])

    def _on_worker(self, name: str, value: bytes | None) -> None:
        if value is None:
            self.state.workers.pop(name, None)
            self.state.backoff.discard(name)
            self._fleet_changed.set()
        else:
            status = parse_worker(value)
            self.state.workers[name] = status
            if status.utilisation >= policy.BACKOFF_UTILISATION:
                self.state.backoff.add(name)
            else:
                self.state.backoff.discard(name)
        self._track_revision()

    def _on_pin(self, name: str, value: bytes | None) -> None:
        if value is None:
            self.state.pins.pop(name, None)
        else:
            self.state.pins[name] = parse_pin(value)

    def _refresh_fleet(self) -> None:
        """Reads workers and pins straight from etcd instead of waiting for the watches."""
        for status in self.metadata.workers():
            self.state.workers.setdefault(status.id, status)
        for pin in self.metadata.pins():
            self.state.pins.setdefault(pin.worker_id, pin)

    def _on_scheduler(self, name: str, value: bytes | None) -> None:
        if value is None:
            self.state.schedulers.discard(name)
            self._fleet_changed.set()
        else:
            self.state.schedulers.add(name)

    def _on_dag(self, name: str, value: bytes | None) -> None:
        if value is None:
            self.state.dags.pop(name, None)
        else:
            self.state.dags[name] = parse_dag_record(value)

    # -- the call loop ---------------------------------------------------------------------

    def _calls_session(self, conn: BrokerConnection) -> None:
        conn.declare(shared_topology(self.names))
        conn.consume(self.names.calls, prefetch=_CALL_PREFETCH)
        while not self._stop.is_set():
            deliveries = conn.poll(0.5)
            if deliveries:
                self._handle_calls(conn, deliveries)

    def _handle_calls(self, conn: BrokerConnection, deliveries: list[Delivery]) -> None:
        out = Outbox()
        accepted: list[int] = []
        for delivery in deliveries:
            try:
                messages = envelope.decode(delivery.body, self.signer)
            except DropletError as exc:
                self._refuse(conn, delivery, exc, out)
                continue
            resent = bool((delivery.headers or {}).get("x-droplet-resent"))
            try:
                for message in messages:
                    if resent and message.WhichOneof("kind") == "call":
                        message.call.maybe_done = True
                    self._dispatch_call(message, delivery.reply_to, out)
                accepted.append(delivery.tag)
            except Exception as exc:
                log.exception("dead-lettering a call message whose handling failed")
                self._refuse(conn, delivery, exc, out)
        gate = dispatch.AckGate(conn, accepted)
        if out.results:
            try:
                self.values.write_results(out.results)
            except DropletError as exc:
                log.warning("could not store refusals (%s); the calls go back", exc)
                gate.fail()
        workers = max(1, len(self.state.workers))
        forwarded = sum(1 for o in out.sent if o.queue == self.names.work)
        chunk = min(_WORK_CHUNK_MAX, max(1, math.ceil(forwarded / workers)))
        dispatch.publish(conn, self.signer, out.sent, gate, self.names.work, chunk)
        gate.release()

    def _refuse(self, conn: BrokerConnection, delivery: Delivery, error: Exception,
                out: Outbox) -> None:
        """Dead-letters a message and tells its sender why (see outbox.refuse)."""
        log.warning("dead-lettering a message from %s: %s", delivery.queue, error)
        code = refusal_code(error)
        self.metrics.error(pb.ErrorCode.Name(code))
        refuse(out, envelope.peek(delivery.body), delivery.reply_to, delivery.correlation_id,
               code, f"refused: {error}")
        conn.reject(delivery.tag, requeue=False)

    def _dispatch_call(self, message: pb.Message, reply_to: str | None, out: Outbox) -> None:
        kind = message.WhichOneof("kind")
        self.metrics.message(kind or "empty")
        if kind == "call":
            response = calls.call_function(message.call, reply_to, self.state, out)
        elif kind == "dag_call":
            self._track_revision()
            response = dags.call_dag(message.dag_call, reply_to, self.state, out)
        else:
            raise DropletError(f"unexpected {kind} message on the call queue")
        if not response.success:
            self.metrics.error(pb.ErrorCode.Name(response.error))

    # -- the admin loop --------------------------------------------------------------------

    def _admin_session(self, conn: BrokerConnection) -> None:
        conn.declare(shared_topology(self.names))
        reply_address = conn.consume_replies()
        conn.consume(self.names.admin, prefetch=1)
        pins = BrokerPins(conn, self.names, self.signer, reply_address, self.settings)
        next_reconcile = 0.0
        while not self._stop.is_set():
            for delivery in conn.poll(0.2) + pins.take_stashed():
                if delivery.queue == self.names.admin:
                    self._handle_admin(conn, delivery, pins)
            if self._fleet_changed.is_set() or time.monotonic() >= next_reconcile:
                self._fleet_changed.clear()
                self._reconcile(pins)
                next_reconcile = time.monotonic() + _RECONCILE_INTERVAL_S

    def _measure_fleet(self) -> None:
        """Fleet gauges, and the depth of the shared queues (through a connection of its
        own: inspecting a queue can close a channel)."""
        self.metrics.workers.set(len(self.state.workers))
        self.metrics.pins.set(len(self.state.pins))
        if self.metrics.port == 0:
            return
        try:
            if self._inspector is None or not self._inspector.is_open:
                self._inspector = self._connect()
            for queue in (self.names.calls, self.names.admin, self.names.work, self.names.dead):
                depth = self._inspector.queue_depth(queue)
                if depth is not None:
                    self.metrics.queue_depth.labels(queue).set(depth)
        except DropletError as exc:
            log.debug("queue depths unavailable: %s", exc)
            self._inspector = None

    def _reconcile(self, pins: BrokerPins) -> None:
        """Moves pins off dead workers and settles what dead workers left in their queues."""
        self._measure_fleet()
        try:
            for action in healing.heal_pins(self.state, self.metadata, pins):
                log.info("healing: %s", action)
            for worker_id, entry in self.reaper.dead_members().items():
                if settled := self.reaper.reap(worker_id, entry):
                    log.info("settled %d messages left by dead worker %s", settled, worker_id)
            if settled := self.reaper.settle_claims():
                log.info("settled %d long calls held by dead workers", settled)
        except DropletError as exc:
            log.warning("reconciliation failed, will retry: %s", exc)

    def _handle_admin(self, conn: BrokerConnection, delivery: Delivery, pins: BrokerPins) -> None:
        out = Outbox()
        try:
            messages = envelope.decode(delivery.body, self.signer)
            unexpected = {m.WhichOneof("kind") for m in messages} - _ADMIN_KINDS
            if unexpected:
                raise DropletError(f"unexpected {sorted(map(str, unexpected))} on the admin queue")
        except DropletError as exc:
            self._refuse(conn, delivery, exc, out)
            dispatch.publish(conn, self.signer, out.sent)
            return
        for message in messages:
            response = self._admin_response(message, pins)
            out.reply(delivery.reply_to, response, correlation_id=delivery.correlation_id)
        gate = dispatch.AckGate(conn, [delivery.tag])
        dispatch.publish(conn, self.signer, out.sent, gate)
        gate.release()

    def _admin_response(self, message: pb.Message, pins: BrokerPins) -> pb.GenericResponse:
        kind = message.WhichOneof("kind")
        try:
            if kind == "function":
                return calls.register_function(message.function, self.metadata)
            if kind == "dag":
                if len(self.state.free_workers()) < len(message.dag.functions):
                    self._refresh_fleet()  # the watch may lag a worker that just joined
                return dags.create_dag(
                    message.dag, self.state, self.metadata, pins,
                    lambda name: self.metadata.get_function(name) is not None,
                )
            if kind == "delete_dag":
                return dags.delete_dag(message.delete_dag.name, self.state, self.metadata, pins)
        except DropletError as exc:
            log.exception("admin request %s failed", kind)
            response = pb.GenericResponse(success=False, message=str(exc))
            response.error = exc.code or pb.INVALID_REQUEST  # type: ignore[assignment]
            return response
        return pb.GenericResponse(
            success=False, error=pb.INVALID_REQUEST, message=f"unexpected {kind} message"
        )
