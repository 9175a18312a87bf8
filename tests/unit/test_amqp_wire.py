"""The lean transport (droplet/broker/amqp.py, amqp_wire.py) against a scripted fake broker on
a local socket: the failures no real broker shows on demand. A broker that goes silent is
noticed after two heartbeats; one that closes the socket after StartOk, or refuses the login
with Connection.Close 403, is a refused user (BrokerCredentialsError, the same words as with
pika); a broker closing the connection, or keeping it blocked past the bound, fails the next
poll with a BrokerError."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from droplet.broker import amqp_frames as f
from droplet.broker import amqp_reader
from droplet.broker.amqp import AmqpConnection
from droplet.errors import BrokerCredentialsError, BrokerError
from droplet.settings import Settings

pytestmark = pytest.mark.timeout(30)


class _Peer:
    """The broker's side of one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def method(self) -> tuple[int, int, bytes]:
        while True:
            while len(self.buf) < 7 or len(self.buf) < 8 + struct.unpack_from(
                    ">I", self.buf, 3)[0]:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError
                self.buf += data
            ftype, ch, size = struct.unpack_from(">BHI", self.buf)
            payload, self.buf = self.buf[7:7 + size], self.buf[8 + size:]
            if ftype == f.FRAME_METHOD:
                return ch, struct.unpack_from(">I", payload)[0], payload[4:]

    def send(self, ch: int, method: int, args: bytes = b"") -> None:
        self.sock.sendall(f.method_frame(ch, method, args))


def _start(peer: _Peer) -> None:
    assert peer.sock.recv(8) == f.PROTOCOL_HEADER
    peer.send(0, f.START, b"\x00\x09" + f.encode_table({}) + f.longstr(b"PLAIN AMQPLAIN")
              + f.longstr(b"en_US"))
    assert peer.method()[1] == f.START_OK


def _open(peer: _Peer, heartbeat: int) -> None:
    _start(peer)
    peer.send(0, f.TUNE, struct.pack(">HIH", 2047, 131072, heartbeat))
    assert peer.method()[1] == f.TUNE_OK
    assert peer.method()[1] == f.OPEN
    peer.send(0, f.OPEN_OK, f.shortstr(""))
    for _ in range(3):  # two channels, one in confirm mode
        ch, method, _ = peer.method()
        peer.send(ch, f.CH_OPEN_OK if method == f.CH_OPEN else f.SELECT_OK,
                  f.longstr(b"") if method == f.CH_OPEN else b"")


@contextmanager
def _broker(script: Callable[[_Peer], None]) -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        sock, _ = listener.accept()
        try:
            script(_Peer(sock))
        except (EOFError, OSError):
            pass
        finally:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/%2F"
    finally:
        listener.close()
        thread.join(10)


def _connect(url: str, heartbeat: int = 30) -> AmqpConnection:
    return AmqpConnection(Settings(broker_url=url, broker_heartbeat_s=heartbeat), "fake")


def _poll_until_error(conn: AmqpConnection, within_s: float) -> BrokerError:
    started = time.monotonic()
    with pytest.raises(BrokerError) as failed:
        while time.monotonic() - started < within_s:
            conn.poll(0.1)
    assert not conn.is_open
    return failed.value


def test_a_silent_broker_is_noticed_after_two_heartbeats() -> None:
    def script(peer: _Peer) -> None:
        _open(peer, heartbeat=1)
        time.sleep(8)

    with _broker(script) as url:
        conn = _connect(url, heartbeat=1)
        started = time.monotonic()
        error = _poll_until_error(conn, 7)
        assert "heartbeat" in str(error)
        # Two heartbeats: 2 s; the rest is room for a crowded host (the peer is silent 8 s).
        assert 1.5 < time.monotonic() - started < 5


@pytest.mark.parametrize("how", ["socket closed", "close 403"])
def test_a_refused_login_is_a_credentials_error(how: str) -> None:
    def script(peer: _Peer) -> None:
        _start(peer)
        if how == "close 403":
            peer.send(0, f.CLOSE, struct.pack(">H", 403) + f.shortstr(
                "ACCESS_REFUSED - Login was refused") + b"\0\x0a\0\x0b")
            peer.method()

    with _broker(script) as url, pytest.raises(BrokerCredentialsError) as refused:
        _connect(url)
    assert "refused user 'guest' on virtual host '/'" in str(refused.value)
    assert "check the user, password and virtual host in broker_url" in str(refused.value)


@pytest.mark.parametrize("how", ["connection.close", "blocked"])
def test_a_closing_or_blocking_broker_fails_the_next_poll(
        how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqp_reader, "BLOCKED_TIMEOUT_S", 0.5)

    def script(peer: _Peer) -> None:
        _open(peer, heartbeat=30)
        if how == "blocked":
            peer.send(0, f.BLOCKED, f.shortstr("low on memory"))
        else:
            peer.send(0, f.CLOSE, struct.pack(">H", 320) + f.shortstr(
                "CONNECTION_FORCED - broker forced connection closure") + b"\0\0\0\0")
        time.sleep(3)

    with _broker(script) as url:
        conn = _connect(url)
        error: Any = _poll_until_error(conn, 3)
        assert ("blocked" if how == "blocked" else "CONNECTION_FORCED") in str(error)
