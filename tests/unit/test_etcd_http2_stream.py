"""A lean watch stream (droplet/store/http2_stream.py) against a scripted HTTP/2 server: its
request stream stays open (etcd ends a watch whose client half-closes); answers split over
frames and padded are read whole, several in a frame one by one; a ping is answered at once
(no next request will carry it); the stream's window is opened again as it is read; its end
(trailers, a reset, a lost connection) is the gRPC error grpcio would raise; cancel() from
another thread wakes the reader."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import grpc
import pytest
from etcd3 import etcdrpc

from droplet.store import http2_stream
from droplet.store.etcd_lean import LeanKV, RpcFailure
from droplet.store.http2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PING,
    RST_STREAM,
    WINDOW_UPDATE,
    frame,
)
from tests.unit.test_etcd_http2 import _Server, _serving

pytestmark = pytest.mark.timeout(30)

_CREATE = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(key=b"/p/",
                                                                          range_end=b"/p0"))


def _opened(server: _Server) -> tuple[int, list[tuple[int, int]]]:
    """Reads the watch's headers and request; returns its stream and (kind, flags) of both."""
    server.greet()
    seen = []
    while len(seen) < 2:
        kind, flags, on, payload = server.frame()
        if kind in (HEADERS, DATA):
            seen.append((kind, flags))
            stream = on
            if kind == DATA:
                assert etcdrpc.WatchRequest.FromString(payload[5:]) == _CREATE
    return stream, seen


def _message(revision: int, filler: int = 0) -> bytes:
    answer = etcdrpc.WatchResponse(watch_id=1, header=etcdrpc.ResponseHeader(revision=revision))
    if filler:
        answer.events.add().kv.value = b"v" * filler
    raw = answer.SerializeToString()
    return b"\x00" + struct.pack(">I", len(raw)) + raw


def _headers(server: _Server, stream: int) -> bytes:
    return frame(HEADERS, END_HEADERS, stream, server.encoder.encode(
        [(":status", "200"), ("content-type", "application/grpc")]))


def _revisions(watch: Any, count: int) -> list[int]:
    got = []
    for response in watch:
        got.append(response.header.revision)
        if len(got) == count:
            return got
    raise AssertionError("the stream ended early")


def test_answers_split_padded_and_several_to_a_frame_come_whole_and_a_ping_goes_back_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2_stream, "_REOPEN_AT", 4000)
    facts: dict[str, Any] = {}

    def script(server: _Server) -> None:
        stream, facts["opened"] = _opened(server)
        big = _message(1, filler=9000)
        out = _headers(server, stream)
        out += b"".join(frame(DATA, PADDED, stream, b"\x02" + big[i:i + 3000] + b"\x00\x00")
                        for i in range(0, len(big), 3000))
        out += frame(DATA, 0, stream, _message(2) + _message(3))
        out += frame(PING, 0, 0, b"pingpong")
        server.sock.sendall(out)
        updates = []
        while not (server.pings_answered and updates):
            kind, _flags, on, payload = server.frame()
            if kind == WINDOW_UPDATE and on == stream:
                updates.append(int.from_bytes(payload, "big"))
        facts["updates"] = updates
        server.sock.sendall(frame(DATA, 0, stream, _message(4)))
        time.sleep(0.2)

    with _serving(script) as (host, port):
        watch = LeanKV(host, port).open_watch(_CREATE)
        assert _revisions(watch, 4) == [1, 2, 3, 4]
        watch.cancel()
    assert facts["opened"] == [(HEADERS, END_HEADERS), (DATA, 0)], "no END_STREAM: left open"
    # Past _REOPEN_AT (4000) after two padded frames of 3003 bytes: the window gets back
    # exactly what they took, padding included (HTTP/2 flow control counts it).
    assert facts["updates"] == [6006]


@pytest.mark.parametrize(("ending", "code"), [
    ("trailers ok", grpc.StatusCode.UNAVAILABLE),
    ("trailers canceled", grpc.StatusCode.CANCELLED),
    ("reset", grpc.StatusCode.UNAVAILABLE),
    ("closed", grpc.StatusCode.UNAVAILABLE),
])
def test_the_end_of_a_stream_is_a_grpc_error(ending: str, code: grpc.StatusCode) -> None:
    def script(server: _Server) -> None:
        stream, _ = _opened(server)
        out = _headers(server, stream) + frame(DATA, 0, stream, _message(7))
        if ending.startswith("trailers"):
            status = "0" if ending.endswith("ok") else "1"
            out += frame(HEADERS, END_HEADERS | END_STREAM, stream,
                         server.encoder.encode([("grpc-status", status)]))
        elif ending == "reset":
            out += frame(RST_STREAM, 0, stream, struct.pack(">I", 2))
        server.sock.sendall(out)  # "closed": the connection closes after the script

    with _serving(script) as (host, port):
        watch = LeanKV(host, port).open_watch(_CREATE)
        got = []
        with pytest.raises(RpcFailure) as caught:
            for response in watch:
                got.append(response.header.revision)
    assert got == [7]
    assert caught.value.code() is code


def test_cancel_from_another_thread_wakes_the_reader_at_once() -> None:
    release = threading.Event()

    def script(server: _Server) -> None:
        _opened(server)
        release.wait(10)

    with _serving(script) as (host, port):
        watch = LeanKV(host, port).open_watch(_CREATE)
        ended = threading.Event()
        outcome: list[BaseException] = []

        def read() -> None:
            try:
                for _ in watch:
                    pass
            except BaseException as exc:  # the test reads it below
                outcome.append(exc)
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        time.sleep(0.2)
        assert not ended.is_set(), "a quiet watch waits"
        watch.cancel()
        assert ended.wait(2), "cancel() woke the reader"
        release.set()
    assert outcome and isinstance(outcome[0], RpcFailure)


def test_a_peer_that_answers_no_ping_is_gone_and_one_that_answers_keeps_the_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped member closes nothing: only a ping finds out (the watch must fail over).

    The answering peer is a thread of this process: on a crowded host it may answer late, so
    it has 5 s to (a build that ignores the answer fails there, and never pings 3 times); the
    test counts 3 pings rather than sleeping for them. The silent peer is given up on after
    its 1 s, once, and a build that never gives up is stopped waiting at 10 s."""
    monkeypatch.setattr(http2_stream, "_PING_AFTER_S", 0.2)
    monkeypatch.setattr(http2_stream, "_PING_TIMEOUT_S", 5.0)
    pings: list[float] = []
    stop = threading.Event()

    def script(server: _Server, answer: bool) -> None:
        _opened(server)
        server.sock.settimeout(0.05)
        while not stop.is_set():
            try:
                kind, flags, _on, payload = server.frame()
            except (TimeoutError, EOFError, OSError):
                continue
            if kind == PING and not flags & 1:
                pings.append(time.monotonic())
                if answer:
                    server.sock.sendall(frame(PING, 1, 0, payload))

    with _serving(lambda server: script(server, answer=True)) as (host, port):
        watch = LeanKV(host, port).open_watch(_CREATE)
        failed: list[BaseException] = []
        reader = threading.Thread(target=lambda: failed.extend(_drain(watch)), daemon=True)
        reader.start()
        deadline = time.monotonic() + 15
        while len(pings) < 3 and not failed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(pings) >= 3 and not failed, f"pinged while quiet, and kept: {failed}"
        watch.cancel()
        reader.join(2)
        stop.set()
    stop.clear()
    pings.clear()
    monkeypatch.setattr(http2_stream, "_PING_TIMEOUT_S", 1.0)
    with _serving(lambda server: script(server, answer=False)) as (host, port):
        watch = LeanKV(host, port).open_watch(_CREATE)
        caught: list[BaseException] = []
        started = time.monotonic()
        drainer = threading.Thread(target=lambda: caught.extend(_drain(watch)), daemon=True)
        drainer.start()
        drainer.join(10)
        took = time.monotonic() - started
        gave_up = not drainer.is_alive()
        if not gave_up:
            watch.cancel()
            drainer.join(2)
        deadline = time.monotonic() + 5  # the server thread may not have read the ping yet
        while not pings and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
    assert gave_up, f"a silent peer still waited for after {took:.1f} s ({len(pings)} pings)"
    assert caught and isinstance(caught[0], RpcFailure), caught
    assert caught[0].code() is grpc.StatusCode.UNAVAILABLE
    assert "answered no ping" in caught[0].details()
    assert len(pings) == 1 and took >= 1.0, (pings, took)


def _drain(watch: Any, swallow: bool = True) -> list[BaseException]:
    try:
        for _ in watch:
            pass
    except RpcFailure as exc:
        if not swallow:
            raise
        return [exc]
    return []
