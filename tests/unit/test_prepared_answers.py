"""The answer to a stored outcome is built while etcd writes the outcome (prepared_answers.py),
and used only when etcd wrote it as it came: a run that lost the write-once race answers the
first outcome, never its own (cycle.py, over the stub broker and the in-memory store)."""

from __future__ import annotations

from typing import Any

import pytest

from droplet import cycle as cycle_module
from droplet import prepared_answers
from droplet.broker.stub import StubBroker, StubConnection
from droplet.broker_config.names import QueueNames
from droplet.broker_config.topology import shared_topology
from droplet.cycle import Cycle
from droplet.outbox import Outbox, deliver
from droplet.proto import envelope, pb
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.commits import Committer
from droplet.store.memory import MemoryKV
from droplet.store.values import ValueStore

from .helpers import SETTINGS

pytestmark = pytest.mark.timeout(30)

SIGNER = Signer(b"k" * 32)


class WatchedKV(MemoryKV):
    """Notes what happens while a transaction is in flight (between its send and its answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = False
        self.encoded_in_flight: list[bool] = []  # one per answer envelope encoded

    def txn_previous(self, compares: Any, ops: Any, meanwhile: Any = None) -> Any:
        self.in_flight = True
        try:
            return super().txn_previous(compares, ops, meanwhile)
        finally:
            self.in_flight = False


def _setup(monkeypatch: pytest.MonkeyPatch) -> tuple[WatchedKV, StubConnection,
                                                        StubConnection, Cycle, QueueNames]:
    kv = WatchedKV()
    real_encode = prepared_answers.encode_answers

    def encode(*args: Any) -> list[prepared_answers.Encoded]:
        kv.encoded_in_flight.append(kv.in_flight)
        return real_encode(*args)

    for module in (prepared_answers, cycle_module):  # prepared, and built after the write
        monkeypatch.setattr(module, "encode_answers", encode)
    broker = StubBroker()
    names = QueueNames("prep")
    worker, client = broker.connect("worker"), broker.connect("client")
    worker.declare(shared_topology(names))
    client.consume_replies()
    committer = Committer(ValueStore(kv, SETTINGS), SETTINGS.etcd_max_txn_ops)
    return kv, worker, client, Cycle(worker, SIGNER, names, committer), names


def _run(worker: StubConnection, client: StubConnection, cycle: Cycle, names: QueueNames,
         call_id: str, result: Any, traced: bool = False) -> pb.GenericResponse:
    """One delivery of a call whose run gives `result`; the answer its caller got."""
    call = pb.FunctionCall(name="f", call_id=call_id, response_key=call_id)
    client.publish(names.work, envelope.encode([pb.Message(call=call)], SIGNER),
                   reply_to="amq.rabbitmq.reply-to")

    def handle(message: pb.Message, delivery: Any, _e: Any, out: Outbox) -> None:
        stamps = [pb.Stamp(stage="client.send", at_s=1.0)] if traced else []
        deliver(out, call_id=message.call.call_id, response_id=message.call.call_id,
                value=serializer.dump(result), address=delivery.reply_to, store=True,
                trace=stamps)

    worker.consume(names.work, prefetch=1)
    cycle.run(worker.poll(1.0)[0], handle)
    worker.pause(names.work)
    [reply] = client.poll(1.0)
    [message] = envelope.decode(reply.body, SIGNER)
    return message.response


def test_a_plain_outcomes_answer_is_built_while_etcd_writes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kv, worker, client, cycle, names = _setup(monkeypatch)
    response = _run(worker, client, cycle, names, "c1", 42)
    assert serializer.load(response.value) == 42 and response.success
    assert kv.encoded_in_flight == [True], "encoded once, while the write was in flight"


def test_a_run_that_lost_the_write_once_race_answers_the_first_outcome(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kv, worker, client, cycle, names = _setup(monkeypatch)
    assert serializer.load(_run(worker, client, cycle, names, "same", 1).value) == 1
    again = _run(worker, client, cycle, names, "same", 2)  # a second run, another result
    assert serializer.load(again.value) == 1, "the stored outcome, not the prepared one"
    # The second answer was prepared during its write, then dropped and built afterwards.
    assert kv.encoded_in_flight == [True, True, False]


def test_a_traced_call_is_answered_after_its_write_with_the_stored_stamp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kv, worker, client, cycle, names = _setup(monkeypatch)
    response = _run(worker, client, cycle, names, "t1", 7, traced=True)
    assert serializer.load(response.value) == 7
    assert [s.stage for s in response.trace] == ["client.send", "stored"]
    assert kv.encoded_in_flight == [False], "not prepared: its stamp is the write's moment"


def test_large_outcomes_are_answered_after_their_write(monkeypatch: pytest.MonkeyPatch) -> None:
    kv, worker, client, cycle, names = _setup(monkeypatch)
    big = "x" * (prepared_answers.PREPARED_MAX_BYTES + 1)
    response = _run(worker, client, cycle, names, "big", big)
    assert serializer.load(response.value) == big
    assert kv.encoded_in_flight == [False], "built after the write, not held meanwhile"
