"""Attacks on two changes: stored outcomes that do not verify read as UNAUTHORIZED
(values.outcome, c06e0a4) and client_id sessions that start at the store's revision
(client/sessions.py, a19c1a2). In process: MemoryKV and the stub broker, no services."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from droplet.aio.bridge import AioBridge
from droplet.client.client import DropletClient
from droplet.client.dagcalls import build_dag_call, send_dag_call
from droplet.errors import DropletError, StoreError
from droplet.proto import envelope, pb
from droplet.store import serializer

from .inprocess import SETTINGS, Fleet

SIGNED = SETTINGS.with_(signing_key="the-fleet-secret", chunk_bytes=1024)


def _resend(fleet: Fleet, name: str, call_id: str, *args: Any) -> None:
    """The same call again (a redelivery, a re-send after a reconnect)."""
    call = pb.FunctionCall(name=name, call_id=call_id, response_key=call_id,
                           response_address=fleet.reply_to)
    for arg in args:
        serializer.dump(arg, call.arguments.values.add())
    fleet.client.publish(fleet.names.work, envelope.encode([pb.Message(call=call)], fleet.signer),
                         reply_to=fleet.reply_to)


def _large_outcome_then(fleet: Fleet, damage: str) -> str:
    fleet.start_worker("w1")
    fleet.register("big", lambda lib, n: "x" * n)
    call_id = fleet.call("big", 5000)
    fleet.run_until_quiet()
    assert len(fleet.answers()[call_id]) == 1
    chunks, _ = fleet.kv.get_prefix(fleet.values.keys.chunks)
    assert len(chunks) > 1, "a chunked outcome"
    first = sorted(chunks)[0]
    if damage == "rewritten":  # by someone with etcd access and without the secret
        fleet.kv.put(first, b"y" * len(chunks[first]))
    else:
        fleet.kv.delete(first)
    return call_id


@pytest.mark.parametrize("damage", ["rewritten", "deleted"])
def test_a_large_outcome_whose_chunk_does_not_verify_is_answered_not_sent_back_forever(
    damage: str,
) -> None:
    """The head verifies, a chunk does not (rewritten: its digest is wrong; deleted: the
    value can never be read whole). The redelivered call's write-once commit reads it:
    StoreError went back to the worker as 'etcd is unavailable', the message went back, and
    the worker took it again, for good (the wedge c06e0a4 fixed for a head, with a chunk)."""
    fleet = Fleet(settings=SIGNED)
    call_id = _large_outcome_then(fleet, damage)
    stored = fleet.values.outcome(call_id)  # raised StoreError
    assert stored is not None
    loaded = serializer.load(stored)
    assert isinstance(loaded, pb.ErrorInfo) and loaded.code == pb.UNAUTHORIZED
    _resend(fleet, "big", call_id, 5000)
    fleet.run_until_quiet(rounds=20)
    answers = fleet.answers()[call_id]
    assert len(answers) == 2, "the redelivery is answered (and acked), once"
    assert isinstance(answers[1], pb.ErrorInfo) and answers[1].code == pb.UNAUTHORIZED
    assert fleet.step("w1", 0.01) is False, "nothing went back to the queue"


def test_an_outcome_unreadable_for_a_moment_does_not_lose_an_asyncio_waiter() -> None:
    """The reply says 'stored' and the I/O thread reads the outcome: when that read fails
    (etcd away for a moment), the waiter had been taken off already and nothing settled it:
    the await hung until result_timeout_s. The threaded future reads again later."""
    fleet = Fleet()
    client = DropletClient(fleet.settings, fleet.kv, fleet.broker.connect)
    value = serializer.dump(41)
    reads: list[int] = []

    def outcome(call_id: str) -> pb.Value | None:
        reads.append(1)
        if len(reads) == 1:
            raise StoreError("etcd is away")
        return value

    client.values.outcome = outcome  # type: ignore[method-assign]

    async def main() -> Any:
        bridge = AioBridge(client, asyncio.get_running_loop())
        try:
            future = bridge.expect("c1", stored=True)
            bridge._arrive("c1", pb.GenericResponse(call_id="c1", stored=True))
            return await asyncio.wait_for(future, 8)
        finally:
            bridge.close()

    try:
        assert asyncio.run(main()) == 41
    finally:
        client.close()


class _Ticking:
    """A store written to between any two reads of its revision (a busy fleet)."""

    def __init__(self, client: DropletClient) -> None:
        self.kv = client.kv
        self.reads = 0
        self._revision = client.kv.revision

    def revision(self) -> int:
        self.reads += 1
        self.kv.put("elsewhere", str(self.reads).encode())
        return self._revision()


def _client() -> tuple[DropletClient, _Ticking]:
    fleet = Fleet()
    client = DropletClient(fleet.settings, fleet.kv, fleet.broker.connect)
    ticking = _Ticking(client)
    client.kv.revision = ticking.revision  # type: ignore[method-assign]
    client.sessions._store_revision = ticking.revision
    return client, ticking


def test_a_multi_call_in_a_new_session_reads_no_older_than_its_own_floor() -> None:
    """A MULTI call reads at its snapshot whatever its floor: the snapshot was read before
    the session's floor (a second etcd read), so with a write in between the call carried a
    floor above its snapshot and read older than its session's floor."""
    client, ticking = _client()
    try:
        call = build_dag_call(client, "d", {}, False, pb.MULTI, None, "s")
        client.dag_routes.trigger = lambda call: None  # type: ignore[method-assign]
        send_dag_call(client, call)
        assert call.min_revision <= call.snapshot_revision
        assert ticking.reads == 1, "a new session's first MULTI call: one etcd read"
    finally:
        client.close()


def test_a_multi_call_whose_session_floor_rises_during_its_snapshot_read_reads_above_it(
) -> None:
    """Another thread's call of the same session saw a newer revision while this MULTI
    call read its snapshot: the call carried that floor, but read at the older snapshot."""
    client, ticking = _client()
    try:
        client.sessions.saw("s", client.kv.revision())
        ticking.reads = 0
        read = client.kv.revision

        def revision() -> int:
            before = read()
            if ticking.reads == 1:  # the snapshot read: a concurrent call saw a newer write
                client.sessions.saw("s", client.kv.put("other", b"newer"))
            return before

        client.kv.revision = revision  # type: ignore[method-assign]
        client.dag_routes.trigger = lambda call: None  # type: ignore[method-assign]
        call = build_dag_call(client, "d", {}, False, pb.MULTI, None, "s")
        send_dag_call(client, call)
        assert call.min_revision <= call.snapshot_revision
    finally:
        client.close()


def test_a_closed_client_refuses_a_session_call_without_reading_etcd() -> None:
    """close() then call_dag(client_id=...): the floor was read from etcd (a closed etcd
    client reconnects, never to be closed) before the pump said the client is closed."""
    client, ticking = _client()
    client.close()
    for consistency in (pb.NORMAL, pb.MULTI):
        with pytest.raises(DropletError, match="the client is closed"):
            client.call_dag("d", {}, consistency=consistency, client_id="s")
    assert ticking.reads == 0


def test_a_dry_run_in_a_session_reads_nothing() -> None:
    client, ticking = _client()
    try:
        described = client.call_dag("d", {}, consistency=pb.MULTI, client_id="s", dry_run=True)
        assert described
        assert ticking.reads == 0
    finally:
        client.close()


def test_a_reference_argument_to_a_value_whose_chunk_does_not_verify_fails_that_call() -> None:
    """A call's DropletReference names a large value one of whose chunks was rewritten by
    someone without the secret: 'is damaged' was taken for etcd away and the call went back
    to its queue, for good. Like an argument that does not verify, it fails the call."""
    fleet = Fleet(settings=SIGNED)
    fleet.start_worker("w1")
    fleet.register("length", lambda lib, v: len(v))
    fleet.values.put("big", "x" * 5000)
    chunks, _ = fleet.kv.get_prefix(fleet.values.keys.chunks)
    first = sorted(chunks)[0]
    fleet.kv.put(first, b"y" * len(chunks[first]))
    call_id = "c-ref"
    call = pb.FunctionCall(name="length", call_id=call_id, response_key=call_id,
                           response_address=fleet.reply_to)
    call.arguments.values.add(type=pb.REFERENCE, body=b"big")
    fleet.client.publish(fleet.names.work, envelope.encode([pb.Message(call=call)], fleet.signer),
                         reply_to=fleet.reply_to)
    fleet.run_until_quiet(rounds=20)
    answers = fleet.answers()[call_id]
    assert len(answers) == 1
    assert isinstance(answers[0], pb.ErrorInfo) and answers[0].code == pb.UNAUTHORIZED
    assert fleet.step("w1", 0.01) is False, "nothing went back to the queue"
