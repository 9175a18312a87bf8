"""Where a client's calls go: plain calls straight to the shared queue, split among the live
workers; calls on stored keys through a scheduler; none sent when no worker is alive."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from droplet.broker_config.names import QueueNames
from droplet.client import routing
from droplet.client.routing import CallRouter
from droplet.proto import envelope, pb
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from droplet.store.serializer import DropletReference

NAMES = QueueNames("routing")
KEYS = StoreKeys("/routing/")


def calls(n: int, reference: bool = False) -> list[pb.FunctionCall]:
    out = []
    for i in range(n):
        call = pb.FunctionCall(name="f", call_id=f"c{i}", response_key=f"c{i}")
        serializer.dump(DropletReference("k") if reference else i, call.arguments.values.add())
        out.append(call)
    return out


def router(kv: MemoryKV, priorities: list[int] | None = None, in_flight: int = 0,
           persistence: list[tuple[bool, bool]] | None = None
           ) -> tuple[CallRouter, list[tuple[str, int]]]:
    sent: list[tuple[str, int]] = []

    def send(queue: str, body: bytes, ids: list[str], priority: int = 0,
             persistent: bool = True) -> None:
        messages = envelope.decode(body, Signer(None))
        assert len(messages) == len(ids)
        assert {m.call.priority for m in messages} == {priority}, "one priority a message"
        sent.append((queue, len(ids)))
        if persistence is not None:  # (direct response?, persistent?) of each envelope
            [direct] = {m.call.direct_response for m in messages}  # one kind a message
            persistence.append((direct, persistent))
        if priorities is not None:
            priorities.append(priority)

    return CallRouter(kv, KEYS, NAMES, Signer(None), send, in_flight=lambda: in_flight), sent


def test_plain_calls_go_to_the_shared_queue_split_among_live_workers() -> None:
    kv = MemoryKV()
    for worker in ("w1", "w2", "w3"):
        kv.put(KEYS.worker(worker), b"")
    route, sent = router(kv)
    assert route.send(calls(30)) == []
    assert sent == [(NAMES.work, 10)] * 3, "one envelope per live worker"
    sent.clear()
    assert route.send(calls(1)) == [] and sent == [(NAMES.work, 1)]


def test_calls_that_meet_busy_workers_go_in_full_envelopes() -> None:
    """With 300 calls awaiting answers on 3 workers, every worker has plenty: 30 more go in
    envelopes of 16, not 10 (each envelope costs a worker one etcd write and one ack)."""
    kv = MemoryKV()
    for worker in ("w1", "w2", "w3"):
        kv.put(KEYS.worker(worker), b"")
    route, sent = router(kv, in_flight=300)
    assert route.send(calls(30)) == []
    assert sent == [(NAMES.work, 16), (NAMES.work, 14)]


def test_calls_of_functions_the_workers_find_quick_go_in_envelopes_of_64() -> None:
    """A worker's status record lists the functions that run in under 1 ms on it: their calls
    go 64 to a message; a batch with any other function's calls, 16."""
    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), pb.WorkerStatus(id="w1", quick_functions=["f"]).SerializeToString())
    kv.put(KEYS.worker("w2"), pb.WorkerStatus(id="w2").SerializeToString())
    route, sent = router(kv, in_flight=300)
    assert route.send(calls(100)) == []
    assert sent == [(NAMES.work, 64), (NAMES.work, 36)]
    sent.clear()
    other = calls(1)
    other[0].name = "g"
    assert route.send(calls(99) + other) == []
    assert sent == [(NAMES.work, 16)] * 6 + [(NAMES.work, 4)], "g is not known quick"


def test_calls_on_stored_keys_go_through_a_scheduler() -> None:
    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), b"")
    route, sent = router(kv)
    assert route.send(calls(2, reference=True) + calls(1)) == []
    assert sent == [(NAMES.calls, 2), (NAMES.work, 1)]


def test_with_no_worker_alive_plain_calls_are_handed_back_unsent() -> None:
    route, sent = router(MemoryKV())
    refused = route.send(calls(3))
    assert [c.call_id for c in refused] == ["c0", "c1", "c2"] and sent == []


def test_calls_of_several_priorities_travel_apart_the_urgent_first() -> None:
    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), b"")
    priorities: list[int] = []
    route, sent = router(kv, priorities)
    batch = calls(6)
    for call, priority in zip(batch, [0, 5, 0, 9, 5, 0], strict=True):
        call.priority = priority
    assert route.send(batch) == []
    assert priorities == [9, 5, 0] and sent == [(NAMES.work, 1), (NAMES.work, 2),
                                               (NAMES.work, 3)]


class _SlowFleetKV(MemoryKV):
    """A store whose reads of the workers' records wait for `gate` once it is armed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.gate = threading.Event()
        self.reads = 0

    def get_prefix(self, prefix: str) -> Any:
        if prefix == KEYS.workers:
            self.reads += 1
            if self.armed:
                self.gate.wait(10)
        return super().get_prefix(prefix)


def test_a_call_never_waits_for_the_fleet_to_be_read_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The look at the fleet that is due every second is the refresher thread's: the call
    that finds the last one old goes out with it (before, it read etcd itself first)."""
    kv = _SlowFleetKV()
    kv.put(KEYS.worker("w1"), b"")
    route, sent = router(kv)
    route.view.recheck_s = 0.0  # every look is old at once
    assert route.send(calls(1)) == [] and kv.reads == 1  # nothing known: read first
    kv.armed = True  # etcd slow from now on
    caller = threading.Thread(target=lambda: route.send(calls(1)))
    caller.start()
    caller.join(5)
    assert not caller.is_alive(), "the call waited for etcd"
    assert sent == [(NAMES.work, 1), (NAMES.work, 1)]
    kv.put(KEYS.worker("w2"), b"")
    kv.gate.set()  # the refresher's read ends, and the next calls know of w2
    deadline = time.monotonic() + 5
    while route.live_workers() != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert route.live_workers() == 2
    route.close()


def test_once_the_last_worker_is_gone_the_next_call_is_answered_no_resources(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "_NONE_FOR_S", 0.2)
    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), b"")
    route, _sent = router(kv)
    route.view.recheck_s = 0.0
    assert route.send(calls(1)) == []
    kv.delete(KEYS.worker("w1"))
    route.send(calls(1))  # (may still go out: the refresher looks meanwhile)
    deadline = time.monotonic() + 5
    while route.view.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert route.send(calls(2)) == calls(2), "handed back unsent: NO_RESOURCES"
    route.close()
    assert route.view.thread is not None
    route.view.thread.join(5)
    assert not route.view.thread.is_alive(), "close() ends the refresher"


def test_direct_response_calls_travel_apart_as_transient_messages() -> None:
    """A direct call's outcome is not kept, so its request is not written to the broker's
    disk either (its client sends it again after a RabbitMQ restart); a stored call's is."""
    kv = MemoryKV()
    kv.put(KEYS.worker("w1"), b"")
    persistence: list[tuple[bool, bool]] = []
    route, _sent = router(kv, persistence=persistence)
    mixed = calls(6)
    for call in mixed[::2]:
        call.direct_response = True
    placed = calls(2, reference=True)  # through a scheduler
    placed[0].direct_response = True
    assert route.send([*mixed, *placed]) == []
    assert sorted(persistence) == [(False, True), (False, True), (True, False), (True, False)]
