"""The hot path's shortcuts do what the longer ways did: the etcd transaction built from gRPC
messages is the one etcd3's transaction objects built, the connection keeper is woken once
for a run of quick calls (not once a call) and still commits behind a slow one in time, and
the middleware chain skips only hooks a middleware does not implement."""

from __future__ import annotations

import time
from typing import Any

import pytest
from etcd3 import etcdrpc
from etcd3 import transactions as tx
from etcd3 import utils as etcd_utils
from etcd3.client import Etcd3Client

from droplet.middleware import Chain, Middleware
from droplet.proto import pb
from droplet.store.etcd_txn import transaction
from droplet.store.kv import Delete, ModRevisionBelow, ModRevisionIs, Put, ValueIs, VersionIs
from droplet.worker.keeper import ConnectionKeeper


class _Stub:
    """Catches the request a transaction sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def Txn(self, request: Any, *_: Any, **__: Any) -> Any:
        self.sent.append(request)
        return etcdrpc.TxnResponse(succeeded=True)


class _Client:
    def __init__(self) -> None:
        self.kvstub = _Stub()
        self.timeout = 1.0
        self.call_credentials = None
        self.metadata = None


def _library_request(compares: list[Any], success: list[Any], failure: list[Any],
                     previous: bool) -> Any:
    """What the previous code sent: etcd3's compare and op objects, its request builders."""
    def compare(c: Any) -> Any:
        if isinstance(c, VersionIs):
            return tx.Version(c.key) == c.version
        if isinstance(c, ValueIs):
            return tx.Value(c.key) == c.value
        if isinstance(c, ModRevisionBelow):
            return tx.Mod(c.key) < c.revision
        return tx.Mod(c.key) == c.revision

    def op(o: Any, prev: bool) -> Any:
        if isinstance(o, Put):
            return tx.Put(o.key, o.value, lease=o.lease, prev_kv=prev)
        end = etcd_utils.prefix_range_end(etcd_utils.to_bytes(o.key)) if o.prefix else None
        return tx.Delete(o.key, range_end=end, prev_kv=prev)

    client = Etcd3Client.__new__(Etcd3Client)  # the builders use no connection
    return etcdrpc.TxnRequest(
        compare=[compare(c).build_message() for c in compares],
        success=client._ops_to_requests([op(o, previous) for o in success]),
        failure=client._ops_to_requests([op(o, False) for o in failure]),
    )


@pytest.mark.parametrize("previous", [False, True])
def test_the_transaction_request_is_the_one_the_library_built(previous: bool) -> None:
    compares = [VersionIs("ns/results/c1", 0), ValueIs("ns/v/k", b"\x00raw"),
                ModRevisionBelow("ns/x", 17), ModRevisionIs("ns/y", 0), ModRevisionIs("ns/z", 9)]
    success = [Put("ns/results/c1", b"value", 7), Put("ns/v/k", b""), Delete("ns/one"),
               Delete("ns/prefix/", prefix=True), Put("ns/\u00e9t\u00e9", b"x", None)]
    failure = [Delete("ns/f/", prefix=True), Put("ns/f", b"y", 3)]
    client = _Client()
    ok, _, old = transaction(compares, success, failure, previous)(client)
    assert ok and old == {}
    want = _library_request(compares, success, failure, previous)
    assert client.kvstub.sent[0].SerializeToString() == want.SerializeToString()
    transaction(compares, success, (), previous)(client)  # no failure branch: none sent
    assert client.kvstub.sent[1] == _library_request(compares, success, [], previous)


def test_a_burst_of_quick_runs_wakes_the_keeper_once_and_a_slow_run_is_flushed_in_time(
) -> None:
    flushed: list[float] = []
    keeper = ConnectionKeeper(interval_s=30.0, flush_after_s=0.05,
                              flush=lambda: flushed.append(time.monotonic()),
                              pending=lambda: True)
    wakes = 0
    original_set = keeper._wake.set

    def counted_set() -> None:
        nonlocal wakes
        wakes += 1
        original_set()

    keeper._wake.set = counted_set  # type: ignore[method-assign]
    keeper._conn = object()  # type: ignore[assignment]  # flushing needs a connection
    keeper.start()
    try:
        time.sleep(0.05)  # asleep at its idle pace (30 s)
        for _ in range(200):  # quick calls, each with outcomes pending before it
            with keeper.running():
                pass
        assert wakes <= 20, wakes  # not once a call (200); a stalled host may add a few
        assert not flushed  # no run was ever flush_after_s old
        started = time.monotonic()
        with keeper.running():  # a slow run: what is pending is committed behind it
            deadline = started + 2.0
            while not flushed and time.monotonic() < deadline:
                time.sleep(0.005)
        assert flushed, "the keeper never committed behind a slow run"
        assert flushed[0] - started < 0.05 + 0.5  # about flush_after_s (a loaded machine)
    finally:
        keeper.stop()


class _Runs(Middleware):
    def __init__(self) -> None:
        self.runs: list[str] = []

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        self.runs.append(function)


class _Everything(Middleware):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def after_message(self, kind: str, error_code: int) -> None:
        self.seen.append(f"message {kind}")

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        self.seen.append(f"run {function}")

    def after_outcome(self, call_id: str, outcome: pb.Value) -> None:
        self.seen.append(f"outcome {call_id}")


class _Broken:
    """Not a Middleware and without the hooks: calling one fails, and is logged."""


def test_the_chain_calls_each_hook_on_whoever_implements_it(
        caplog: pytest.LogCaptureFixture) -> None:
    runs, everything = _Runs(), _Everything()
    chain = Chain([runs, everything, _Broken()])  # type: ignore[list-item]
    chain.after_message("call", pb.NO_ERROR)
    chain.after_run("f", 0.1, pb.Value())
    chain.after_outcome("c1", pb.Value())
    assert runs.runs == ["f"]
    assert everything.seen == ["message call", "run f", "outcome c1"]
    assert len(caplog.records) == 3  # _Broken, once per hook, logged


def test_interrupt_state_is_put_back_when_a_call_was_cancelled_before_it_started() -> None:
    from droplet.store.memory import MemoryKV
    from droplet.worker.cancel import CallCancelled, Cancellations

    kv = MemoryKV()
    kv.put("cancels/c1", b"1")
    cancels = Cancellations().start(kv, "cancels/")
    try:
        deadline = time.monotonic() + 2
        while not cancels.is_cancelled("c1") and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(CallCancelled), cancels.interruptible("c1"):
            raise AssertionError("ran")
        assert cancels._running is None and cancels._also is None
        with cancels.interruptible("c2", "c3"):
            assert cancels._running == "c2" and cancels._also == "c3"
        assert cancels._running is None and cancels._also is None
    finally:
        cancels.close()


@pytest.mark.parametrize("key", ["fleet secret", b"\x00" * 100])  # a key longer than a block
def test_tags_from_the_keyed_copy_are_the_hmac_of_context_and_payload(key: str | bytes) -> None:
    import hashlib
    import hmac

    from droplet.signing import Signer, value_context

    signer = Signer(key)
    raw = key.encode() if isinstance(key, str) else key
    for context, payload in [(b"envelope", b""), (value_context("values/k"), b"x" * 100_000)]:
        framed = signer.seal(payload, context)
        want = hmac.new(raw, len(context).to_bytes(4, "big") + context + payload,
                        hashlib.sha256).digest()
        assert framed[1:33] == want
        assert signer.open(framed, context) == payload
