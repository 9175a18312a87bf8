"""A whole fleet in one process: workers and a scheduler over the stub broker and MemoryKV,
stepped one delivery at a time by the test, so that a fault can be injected at any step of
the message cycle and what follows checked deterministically (no services, no threads)."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from droplet.broker.stub import StubBroker, StubConnection
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import shared_topology
from droplet.cycle import Cycle
from droplet.proto import envelope, pb
from droplet.scheduler.service import SchedulerService
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore
from droplet.worker.service import WorkerService

SETTINGS = Settings(namespace="inproc", worker_lease_ttl_s=30, status_interval_s=60)


@dataclass
class Member:
    service: WorkerService
    conn: StubConnection
    cycle: Cycle
    attachment: Any = None  # held, or the keeper forgets its connection


@dataclass
class Fleet:
    broker: StubBroker = field(default_factory=StubBroker)
    kv: MemoryKV = field(default_factory=MemoryKV)
    settings: Settings = SETTINGS
    workers: dict[str, Member] = field(default_factory=dict)
    replies: list[pb.GenericResponse] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = QueueNames(self.settings.namespace)
        self.signer = Signer(self.settings.signing_key)
        self.values = ValueStore(self.kv, self.settings)
        self.client = self.broker.connect("client")
        self.client.declare(shared_topology(self.names))
        self.client.consume_replies()
        self.reply_to = f"stub.reply.{self.client.id}"  # where the stub routes this client's
        self._ids = itertools.count(1)
        self.scheduler: SchedulerService | None = None
        self.scheduler_conn: StubConnection | None = None
        self.scheduler_cycle: Cycle | None = None

    # -- the fleet -------------------------------------------------------------------------

    def start_worker(self, worker_id: str) -> Member:
        service = WorkerService(self.settings, self.kv, self.broker.connect, worker_id)
        service.cache.start()
        conn = self.broker.connect(worker_id)
        member = Member(service, conn, service.open_session(conn))
        member.attachment = service.keeper.attached(conn)  # the keeper, as in a session
        member.attachment.__enter__()
        service.keeper.start()
        self.workers[worker_id] = member
        return member

    def crash(self, worker_id: str) -> None:
        """kill -9: the connection goes (the broker requeues what was unacked), and the
        process's memory with it."""
        member = self.workers.pop(worker_id)
        member.service.keeper.stop()
        member.service.membership.leave()
        member.conn.close()

    def start_scheduler(self) -> SchedulerService:
        scheduler = SchedulerService(self.settings, self.kv, self.broker.connect, "sched")
        scheduler.fleet.start(on_change=lambda: None)
        self.scheduler = scheduler
        self.scheduler_conn = self.broker.connect("scheduler")
        self.scheduler_conn.declare(shared_topology(self.names))
        self.scheduler_conn.consume(self.names.calls, prefetch=256)
        self.scheduler_cycle = scheduler._cycle(self.scheduler_conn)
        return scheduler

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        self.values  # noqa: B018 - the store exists before functions do
        from droplet.store.metadata import Metadata

        Metadata(self.kv, self.settings, self.signer).put_function(
            pb.Function(name=name, body=cloudpickle.dumps(fn)))

    def pin(self, dag: pb.Dag, locations: dict[str, str]) -> None:
        from droplet.store.metadata import Metadata

        metadata = Metadata(self.kv, self.settings, self.signer)
        pending = metadata.create_dag(dag, "test", "req", None)
        assert pending is not None
        for function, worker_id in locations.items():
            assert metadata.claim_pin(worker_id, dag.name, function)
            self.workers[worker_id].service.state.pinned = (dag.name, function)
        assert metadata.mark_dag_ready(dag, pending)

    # -- traffic ---------------------------------------------------------------------------

    def call(self, name: str, *args: Any, queue: str | None = None) -> str:
        call_id = uuid.uuid4().hex
        call = pb.FunctionCall(name=name, call_id=call_id, response_key=call_id,
                               response_address=self.reply_to)
        for arg in args:
            serializer.dump(arg, call.arguments.values.add())
        self.client.publish(queue or self.names.work,
                            envelope.encode([pb.Message(call=call)], self.signer),
                            reply_to=self.reply_to)
        return call_id

    def call_dag(self, name: str, args: dict[str, list[Any]], **fields: Any) -> str:
        call_id = uuid.uuid4().hex
        call = pb.DagCall(name=name, call_id=call_id, response_address=self.reply_to, **fields)
        for function, values in args.items():
            for value in values:
                serializer.dump(value, call.function_args[function].values.add())
        self.client.publish(self.names.calls,
                            envelope.encode([pb.Message(dag_call=call)], self.signer),
                            reply_to=self.reply_to)
        return call_id

    def step(self, worker_id: str, timeout_s: float = 0.05) -> bool:
        member = self.workers[worker_id]
        return member.service.serve_once(member.conn, member.cycle, timeout_s)

    def settle(self, worker_id: str) -> None:
        """Runs the confirms a worker is waiting on (acks what they allow)."""
        self.workers[worker_id].conn.pump()

    def schedule(self, timeout_s: float = 0.05) -> int:
        assert self.scheduler is not None and self.scheduler_conn is not None
        assert self.scheduler_cycle is not None
        deliveries = self.scheduler_conn.poll(timeout_s)
        for delivery in deliveries:
            self.scheduler.serve_call(self.scheduler_cycle, delivery)
        return len(deliveries)

    def run_until_quiet(self, rounds: int = 100) -> None:
        """Steps every process until three rounds in a row found nothing to do."""
        quiet = 0
        for _ in range(rounds):
            busy = any([self.step(w, 0.01) for w in list(self.workers)])
            if self.scheduler is not None:
                busy = self.schedule(0.01) > 0 or busy
                assert self.scheduler_conn is not None
                self.scheduler_conn.pump()
            for w in list(self.workers):
                self.settle(w)
            quiet = 0 if busy else quiet + 1
            if quiet == 3:
                return

    def count_published(self) -> Counter[str]:
        """Counts, by queue, every message published from now on (by anyone)."""
        published: Counter[str] = Counter()
        route = self.broker.route

        def counting(queue: str, message: Any, mandatory: bool) -> None:
            published[queue] += 1
            route(queue, message, mandatory)

        self.broker.route = counting  # type: ignore[method-assign]
        return published

    def answers(self) -> dict[str, list[Any]]:
        """Every answer the client got so far, by call id."""
        for delivery in self.client.poll(0.01):
            for message in envelope.decode(delivery.body, self.signer):
                if message.WhichOneof("kind") == "response":
                    self.replies.append(message.response)
        out: dict[str, list[Any]] = {}
        for response in self.replies:
            value = serializer.load(response.value) if response.HasField("value") else None
            out.setdefault(response.call_id, []).append(value)
        return out

    def stored(self, call_id: str) -> Any:
        value = self.values.outcome(call_id)
        return None if value is None else serializer.load(value)
