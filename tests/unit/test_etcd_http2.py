"""The lean etcd path (droplet/store/http2.py, etcd_lean.py) against a scripted HTTP/2 server on
a local socket: what a real etcd does only now and then. Answers split over frames, padded or
continued; pings answered with the next request; a request larger than the server's window
waits for its WINDOW_UPDATE; a GOAWAY, a reset, an error status with encoded words, a peer
that is not HTTP/2, a silent peer and a closed idle connection each end as the gRPC error
grpcio would raise (the store's retries and fail-over read that)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import hpack
import pytest
from etcd3 import etcdrpc

from droplet.store import etcd_lean, http2
from droplet.store.etcd_lean import LeanKV, RpcFailure
from droplet.store.http2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PING,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)

pytestmark = pytest.mark.timeout(30)


class _Server:
    """The server's side of one connection: reads frames, writes what a test tells it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.pings_answered: list[bytes] = []

    def frame(self) -> tuple[int, int, int, bytes]:
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        size = int.from_bytes(self.buf[:3], "big")
        kind, flags, stream = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big")
        payload, self.buf = self.buf[9:9 + size], self.buf[9 + size:]
        if kind == PING and flags & 1:
            self.pings_answered.append(payload)
        return kind, flags, stream, payload

    def greet(self, settings: bytes = b"") -> None:
        preface = self.sock.recv(len(http2.PREFACE), socket.MSG_WAITALL)
        assert preface == http2.PREFACE
        self.sock.sendall(frame(SETTINGS, 0, 0, settings))

    def request(self) -> tuple[int, str, bytes]:
        """The next request: (stream, path, protobuf body)."""
        path, body, stream = "", b"", 0
        while True:
            kind, flags, on, payload = self.frame()
            if kind == HEADERS:
                stream, path = on, dict(hpack.Decoder().decode(payload))[":path"]
            elif kind == DATA and on == stream:
                body += payload
                if flags & END_STREAM:
                    return stream, path, body[5:]

    def answer(self, stream: int, message: bytes, *, split: int = 0, padded: bool = False,
               before_trailers: bytes = b"") -> None:
        body = b"\x00" + struct.pack(">I", len(message)) + message
        out = frame(HEADERS, END_HEADERS, stream, self.encoder.encode(
            [(":status", "200"), ("content-type", "application/grpc")]))
        parts = [body[i:i + split] for i in range(0, len(body), split)] if split else [body]
        for part in parts:
            out += (frame(DATA, PADDED, stream, b"\x03" + part + b"\x00" * 3) if padded
                    else frame(DATA, 0, stream, part))
        out += before_trailers
        out += frame(HEADERS, END_HEADERS | END_STREAM, stream,
                     self.encoder.encode([("grpc-status", "0")]))
        self.sock.sendall(out)

    def fail(self, stream: int, code: int, words: str) -> None:
        self.sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, stream, self.encoder.encode(
            [(":status", "200"), ("grpc-status", str(code)), ("grpc-message", words)])))


@contextmanager
def _serving(script: Callable[[_Server], None]) -> Iterator[tuple[str, int]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    errors: list[BaseException] = []

    def run() -> None:
        conn, _ = listener.accept()
        try:
            script(_Server(conn))
        except BaseException as exc:  # the test reads it below
            errors.append(exc)
        finally:
            time.sleep(0.05)
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        thread.join(10)
        listener.close()
    assert not errors, errors


def _range(stub: LeanKV, key: bytes = b"k", timeout: float = 2.0) -> Any:
    return stub.Range(etcdrpc.RangeRequest(key=key), timeout)


def _kv_answer(value: bytes) -> bytes:
    answer = etcdrpc.RangeResponse(count=1)
    answer.kvs.add(key=b"k", value=value)
    return answer.SerializeToString()


def test_an_answer_split_and_padded_is_read_whole_and_pings_go_back_with_the_next_request(
) -> None:
    seen: list[Any] = []

    def script(server: _Server) -> None:
        server.greet()
        stream, path, body = server.request()
        seen.append((path, etcdrpc.RangeRequest.FromString(body).key))
        server.answer(stream, _kv_answer(b"v" * 3000), split=700, padded=True,
                      before_trailers=frame(PING, 0, 0, b"12345678"))
        stream, _, _ = server.request()
        # The ping's answer follows the request's last DATA frame in the same write (no write
        # of its own), so the server has read the request when it learns the ping came back.
        assert server.pings_answered == []
        assert server.frame()[0] == PING
        seen.append(list(server.pings_answered))
        server.answer(stream, _kv_answer(b"second"))

    with _serving(script) as (host, port):
        stub = LeanKV(host, port)
        assert _range(stub).kvs[0].value == b"v" * 3000
        assert _range(stub).kvs[0].value == b"second"
        stub.close()
    assert seen == [("/etcdserverpb.KV/Range", b"k"), [b"12345678"]]


def test_a_request_larger_than_the_servers_window_waits_for_its_window_update() -> None:
    got: list[int] = []

    def script(server: _Server) -> None:
        server.greet(struct.pack(">HI", 4, 1000))  # INITIAL_WINDOW_SIZE: 1000 bytes a stream
        body = b""
        stream = 0
        while len(body) < 1000:
            kind, _flags, on, payload = server.frame()
            if kind == HEADERS:
                stream = on
            elif kind == DATA:
                body += payload
        time.sleep(0.2)  # the client must wait, not send past the window
        server.sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            server.frame()
        server.sock.settimeout(None)
        server.sock.sendall(frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", 10**6)))
        while True:
            kind, flags, on, payload = server.frame()
            if kind == DATA:
                body += payload
                if flags & END_STREAM:
                    break
        got.append(len(etcdrpc.PutRequest.FromString(body[5:]).value))
        server.answer(stream, etcdrpc.PutResponse().SerializeToString())

    with _serving(script) as (host, port):
        stub = LeanKV(host, port)
        stub.Put(etcdrpc.PutRequest(key=b"k", value=b"x" * 50_000), 5.0)
        stub.close()
    assert got == [50_000]


@pytest.mark.parametrize(("code", "name"), [(9, "FAILED_PRECONDITION"), (14, "UNAVAILABLE"),
                                            (3, "INVALID_ARGUMENT")])
def test_an_error_status_is_the_grpc_error_with_its_words_decoded(code: int, name: str) -> None:
    def script(server: _Server) -> None:
        server.greet()
        stream, _, _ = server.request()
        server.fail(stream, code, "etcdserver:%20mvcc%3A required revision has been compacted")

    with _serving(script) as (host, port), pytest.raises(RpcFailure) as caught:
        _range(LeanKV(host, port))
    assert isinstance(caught.value, grpc.RpcError)
    assert caught.value.code() is getattr(grpc.StatusCode, name)
    assert caught.value.details() == "etcdserver: mvcc: required revision has been compacted"


def test_a_goaway_before_the_request_was_taken_is_unavailable_and_the_next_call_reconnects(
) -> None:
    connections = []

    def script(server: _Server) -> None:
        connections.append(server)
        server.greet()
        stream, _, _ = server.request()
        server.sock.sendall(frame(7, 0, 0, struct.pack(">II", max(stream - 2, 0), 0) + b"draining"))

    with _serving(script) as (host, port):
        stub = LeanKV(host, port)
        with pytest.raises(RpcFailure) as caught:
            _range(stub)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "going away (draining)" in caught.value.details()
    assert stub._idle == [], "the connection is dropped, not pooled"


def test_a_reset_stream_is_an_error_of_that_call() -> None:
    def script(server: _Server) -> None:
        server.greet()
        stream, _, _ = server.request()
        server.sock.sendall(frame(3, 0, stream, struct.pack(">I", 7)))  # REFUSED_STREAM

    with _serving(script) as (host, port), pytest.raises(RpcFailure) as caught:
        _range(LeanKV(host, port))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_port_that_is_not_http2_is_a_closed_socket_at_once() -> None:
    def script(server: _Server) -> None:
        server.sock.recv(100)
        server.sock.sendall(b"\x15\x03\x01\x00\x02\x02\x46")  # a TLS alert

    started = time.monotonic()
    with _serving(script) as (host, port), pytest.raises(RpcFailure) as caught:
        _range(LeanKV(host, port), timeout=10.0)
    assert time.monotonic() - started < 5.0, "not left to wait for the deadline (10 s)"
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "socket closed" in caught.value.details()


def test_a_silent_peer_is_a_deadline_exceeded_after_the_timeout() -> None:
    def script(server: _Server) -> None:
        server.greet()
        server.request()
        time.sleep(3.0)

    started = time.monotonic()
    with _serving(script) as (host, port):
        with pytest.raises(RpcFailure) as caught:
            _range(LeanKV(host, port), timeout=0.3)
        took = time.monotonic() - started  # (before the silent peer's 3 s are over)
    assert 0.25 < took < 2.5
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_nothing_listening_is_unavailable() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with pytest.raises(RpcFailure) as caught:
        _range(LeanKV("127.0.0.1", port))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_an_idle_connection_the_server_closed_is_replaced_before_a_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_lean, "_CHECK_IDLE_S", 0.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    served: list[int] = []

    def run() -> None:
        for round_ in range(2):
            conn, _ = listener.accept()
            server = _Server(conn)
            server.greet()
            stream, _, _ = server.request()
            server.answer(stream, _kv_answer(b"round %d" % round_))
            served.append(round_)
            time.sleep(0.1)
            conn.close()  # idle: the server hangs up

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    host, port = listener.getsockname()
    stub = LeanKV(host, port)
    assert _range(stub).kvs[0].value == b"round 0"
    time.sleep(0.3)
    assert _range(stub).kvs[0].value == b"round 1", "a new connection, no failed call"
    stub.close()
    thread.join(5)
    listener.close()
    assert served == [0, 1]


def test_request_headers_are_literals_and_long_values_take_a_multi_byte_length() -> None:
    token = "t" * 300
    block = http2.header_block([(":path", "/x"), ("token", token)])
    assert hpack.Decoder().decode(block) == [(":path", "/x"), ("token", token)]


def test_a_connection_whose_preface_cannot_be_sent_closes_its_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[socket.socket] = []

    class Resetting(socket.socket):
        def sendall(self, data: Any, flags: int = 0) -> None:
            raise ConnectionResetError("reset at once")

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        sock = Resetting()
        sock.settimeout(timeout)
        sock.connect(address)
        made.append(sock)
        return sock

    monkeypatch.setattr(http2.socket, "create_connection", connect)
    with _serving(lambda server: None) as (host, port), pytest.raises(http2.CallFailure):
        http2.Http2Connection(host, port, 2.0)
    assert made and made[0].fileno() == -1, "closed, not left to the garbage collector"
