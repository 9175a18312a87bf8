"""The scheduler process: thin loops around the message cycle (cycle.py) and the handlers.

Two consume loops, each on its own broker connection: the call loop (FunctionCall, DagCall,
and whatever comes back from dead workers: fast, never blocks) and the admin loop (Function,
Dag, DeleteDag: may wait on pin replies; also heals the fleet). Fleet state comes from etcd
mirrors, so the call path reads nothing from etcd.

Admin requests carry a request id: the answer is kept in etcd under it, so a redelivered or
replayed request gets the first answer instead of running again; with a fleet secret, a
request older than `admin_max_age_s` is refused outright.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from droplet.broker.interface import BrokerConnection, ConnectionFactory, Delivery
from droplet.broker.session import run_with_reconnect
from droplet.broker_config.names import RESENT_HEADER, QueueNames, is_reply_address
from droplet.broker_config.topology import (
    priorities_note,
    retry_topology,
    shared_topology,
)
from droplet.cycle import Cycle
from droplet.errors import DropletError, UnauthorizedError
from droplet.metrics import Metrics, MetricsMiddleware
from droplet.middleware import Chain, Middleware
from droplet.outbox import Outbox, adopt_reply_address
from droplet.proto import pb
from droplet.scheduler import calls, dags, delays
from droplet.scheduler.fleet import FleetView
from droplet.scheduler.pinning import BrokerPins
from droplet.scheduler.reaper import Reaper
from droplet.scheduler.reconcile import Reconciler
from droplet.scheduler.state import SchedulerState
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.commits import Committer
from droplet.store.kv import KV
from droplet.store.membership import Membership
from droplet.store.metadata import Answer, Metadata
from droplet.store.values import ValueStore

log = logging.getLogger(__name__)

_CALL_PREFETCH = 256
_ADMIN_KINDS = {"function", "dag", "delete_dag"}
_WORK_CHUNK_MAX = 16
_ANSWER_TTL_S = 3600


class SchedulerService:
    def __init__(self, settings: Settings, kv: KV, connect: ConnectionFactory,
                 scheduler_id: str | None = None, middleware: Sequence[Middleware] = ()) -> None:
        self.settings = settings
        self.id = scheduler_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.names = QueueNames.of(settings)
        self.signer = Signer(settings.signing_key)
        self.state = SchedulerState(self.names, scheduler_id=self.id,
                                    fresh_revision=kv.revision,
                                    max_message_bytes=settings.max_message_bytes)
        self.metadata = Metadata(kv, settings, self.signer)
        self.values = ValueStore(kv, settings, self.signer)
        self.committer = Committer(self.values, settings.etcd_max_txn_ops)
        self._kv = kv
        self._connect = connect
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = time.time()
        self.metrics = Metrics("scheduler")
        self.middleware = Chain([MetricsMiddleware(self.metrics), *middleware])
        self.membership = Membership(
            kv, self.metadata.keys.scheduler(self.id), settings.worker_lease_ttl_s, self._record
        )
        self.fleet = FleetView(kv, self.metadata, self.state)
        reaper = Reaper(connect, self.names, self.state, kv, self.metadata.keys,
                        lambda: self.membership.lease_id)
        self.reconciler = Reconciler(settings, self.state, self.metadata, self.values, reaper,
                                     self.metrics, connect)
        self._declared: set[tuple[int, str]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.fleet.start(on_change=self.reconciler.fleet_changed.set,
                         on_count=self.membership.publish_soon)
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
        if note := priorities_note(self.names):
            log.warning(note)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.fleet.close()
        self.membership.leave()

    def _record(self) -> bytes:
        status = pb.SchedulerStatus(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), started_at=self._started_at,
            metrics_port=self.metrics.port, workers_seen=len(self.state.workers),
        )
        return status.SerializeToString()

    def _cycle(self, conn: BrokerConnection) -> Cycle:
        return Cycle(conn, self.signer, self.names, self.committer, middleware=self.middleware,
                     prepare=lambda queue: self._prepare(conn, queue),
                     max_bytes=self.settings.max_message_bytes)

    def _prepare(self, conn: BrokerConnection, queue: str) -> None:
        delay_ms = self.names.retry_delay_ms(queue)
        if delay_ms is not None and (id(conn), queue) not in self._declared:
            conn.declare(retry_topology(self.names, delay_ms))
            self._declared.add((id(conn), queue))

    # -- the call loop ---------------------------------------------------------------------

    def _calls_session(self, conn: BrokerConnection) -> None:
        conn.declare(shared_topology(self.names))
        conn.consume(self.names.calls, prefetch=_CALL_PREFETCH)
        cycle = self._cycle(conn)
        while not self._stop.is_set():
            for delivery in conn.poll(0.5):
                self.serve_call(cycle, delivery)

    def serve_call(self, cycle: Cycle, delivery: Delivery) -> None:
        """One delivery of the call queue; a burst of calls is split among idle workers."""
        workers = max(1, len(self.state.workers))
        cycle.split[self.names.work] = min(_WORK_CHUNK_MAX, max(1, math.ceil(64 / workers)))
        cycle.run(delivery, self._handle_call)

    def _handle_call(self, message: pb.Message, delivery: Delivery, _env: pb.Envelope,
                     out: Outbox) -> None:
        kind = message.WhichOneof("kind")
        reply_to = delivery.reply_to if is_reply_address(delivery.reply_to) else None
        resent = delivery.redelivered or bool((delivery.headers or {}).get(RESENT_HEADER))
        if kind == "call":
            if not delays.route_delayed(message.call, reply_to, self.state, out,
                                        self.metadata.keys, redelivered=delivery.redelivered,
                                        max_delay_s=self.settings.max_delay_s):
                calls.call_function(message.call, reply_to, self.state, out, maybe_done=resent)
        elif kind == "dag_call":
            self.fleet.track_revision()
            dags.call_dag(message.dag_call, reply_to, self.state, out)
        elif kind == "trigger":
            adopt_reply_address(message.trigger, reply_to)  # a client's, from a dead worker
            dags.reroute(message.trigger, self.state, out)
        elif kind == "schedule":
            pass  # notice for a worker that is gone: its triggers are re-routed
        elif kind in ("pin", "unpin") and (delivery.headers or {}).get(RESENT_HEADER):
            # Left in a dead worker's queue, moved here by the reaper: its scheduler took no
            # answer for a refusal (pinning.py), so it is moot; it is no bad input to
            # dead-letter.
            log.info("dropping a %s request left for a worker that is gone", kind)
        else:
            raise DropletError(f"unexpected {kind} message on the call queue")

    # -- the admin loop --------------------------------------------------------------------

    def _admin_session(self, conn: BrokerConnection) -> None:
        conn.declare(shared_topology(self.names))
        reply_address = conn.consume_replies()
        conn.consume(self.names.admin, prefetch=1)
        pins = BrokerPins(conn, self.names, self.signer, reply_address, self.settings)
        cycle = self._cycle(conn)

        def handle(message: pb.Message, delivery: Delivery, received: pb.Envelope,
                   out: Outbox) -> None:
            self._handle_admin(message, delivery, received, out, pins)

        while not self._stop.is_set():
            for delivery in conn.poll(0.2) + pins.take_stashed():
                if delivery.queue == self.names.admin:
                    cycle.run(delivery, handle)
            self.reconciler.maybe_run(pins)

    def _handle_admin(self, message: pb.Message, delivery: Delivery, received: pb.Envelope,
                      out: Outbox, pins: BrokerPins) -> None:
        kind = message.WhichOneof("kind")
        if kind not in _ADMIN_KINDS:
            raise DropletError(f"unexpected {kind} message on the admin queue")
        age_s = time.time() - received.issued_at_ms / 1000
        if self.signer.enabled and age_s > self.settings.admin_max_age_s:
            raise UnauthorizedError(f"an admin request issued {age_s:.0f}s ago is refused "
                                    f"(admin_max_age_s is {self.settings.admin_max_age_s:g})")
        request_id = received.nonce
        answer = self.metadata.answer_of(request_id)
        if answer is None:
            answer = self._admin_response(message, pins, request_id)
            if answer.value.type != pb.ERROR:
                answer.ClearField("value")  # an admin answer carries no pickle, ever
            answer.call_id = request_id  # signed: the client checks it against its request
            lease = self.values.leases.lease(max(_ANSWER_TTL_S,
                                                 2 * self.settings.admin_max_age_s))
            self.metadata.keep_answer(Answer(request_id, answer, lease))
        if is_reply_address(delivery.reply_to):
            out.reply(delivery.reply_to, answer, correlation_id=delivery.correlation_id)

    def _admin_response(self, message: pb.Message, pins: BrokerPins,
                        request_id: str) -> pb.GenericResponse:
        kind = message.WhichOneof("kind")
        if kind == "function":
            return calls.register_function(message.function, self.metadata)
        if kind == "dag":
            if len(self.state.free_workers()) < len(message.dag.functions):
                self.fleet.refresh()  # the watch may lag a worker that just joined
            wait_s = self.settings.worker_lease_ttl_s * 1.5 + self.settings.pin_timeout_s * (
                len(message.dag.functions) + 1)
            return dags.create_dag(
                message.dag, self.state, self.metadata, pins,
                lambda name: self.metadata.get_function(name) is not None,
                request_id=request_id, lease=self.membership.lease_id, wait_s=wait_s,
            )
        return dags.delete_dag(message.delete_dag.name, self.state, self.metadata, pins,
                               request_id)
