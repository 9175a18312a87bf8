"""The lean transport's socket: opening it (TCP, TLS, the AMQP handshake), writing, reading,
heartbeats and the wake-up of a blocked poll.

Apart from the connection's protocol logic (broker/amqp.py) because this is where the
operating system's failure modes are: a node that accepts TCP and never answers must fail in
bounded time (the walk over broker_url's nodes goes on), a refused user must read as one, a
non-blocking TLS socket takes a write partly or not at all and must be offered the same bytes
again, and a peer that went silent is only noticed by the clock. Writes are queued as bytes
and sent by `flush`, small ones joined into one send (a reply and its delivery's ack: one
system call and one packet), large frames on their own (no re-copying of a big buffer).
"""

from __future__ import annotations

import contextlib
import platform
import select
import socket
import ssl
import struct
import time
from collections import deque

from droplet.broker import amqp_frames as f
from droplet.broker.connecting import Endpoint, connect_error
from droplet.errors import BrokerError
from droplet.settings import Settings

CONNECT_TIMEOUT_S = 5.0  # TCP connect, TLS handshake, and each read of the AMQP handshake
HANDSHAKE_TIMEOUT_S = 15.0  # the whole AMQP handshake
STALLED_WRITE_S = 60.0  # a broker that takes no byte for this long (blocked) is given up
_JOIN_MAX = 64 * 1024  # queued writes are joined into one send up to this size
_RECV = 65536
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_CAPABILITIES = {"publisher_confirms": True, "consumer_cancel_notify": True,
                 "basic.nack": True, "connection.blocked": True,
                 "authentication_failure_close": True}


class WireError(Exception):
    """The connection is unusable: closed by the broker, silent too long, or garbled."""


class Refused(WireError):
    """The broker closed the connection while checking the user or the virtual host."""


class Wire:
    """One open AMQP connection's socket, after the handshake (non-blocking from then on)."""

    def __init__(self, sock: socket.socket, frame_max: int, heartbeat: int) -> None:
        self.sock = sock
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self.rbuf = bytearray()
        self.out: deque[bytes] = deque()
        self._current: memoryview | None = None  # a chunk partly sent: offered again as is
        self.last_read = self.last_write = time.monotonic()
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.closed = False
        self._tls = isinstance(sock, ssl.SSLSocket)
        sock.setblocking(False)

    # -- writing -------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Writes data now (after what is queued)."""
        self.out.append(data)
        self.flush()

    def flush(self) -> None:
        """Sends everything queued; waits (reading meanwhile) while the socket takes none."""
        out = self.out
        while True:
            view = self._current
            if view is None:
                if not out:
                    return
                chunk = out.popleft()
                if out and len(chunk) < _JOIN_MAX and len(out[0]) < _JOIN_MAX:
                    parts = [chunk]
                    size = len(chunk)
                    while out and size + len(out[0]) <= _JOIN_MAX:
                        size += len(out[0])
                        parts.append(out.popleft())
                    chunk = b"".join(parts)
                view = memoryview(chunk)
            try:
                sent = self._send_raw(view)
            except _WOULD_BLOCK:
                self._current = view
                self._wait_writable()
                continue
            self.last_write = time.monotonic()
            self._current = view[sent:] if sent < len(view) else None

    def _send_raw(self, data: memoryview) -> int:
        """One send() (the tests count and squeeze them here)."""
        return self.sock.send(data)

    def _wait_writable(self) -> None:
        started = time.monotonic()
        while True:
            readable, writable, _ = select.select([self.sock], [self.sock], [], 1.0)
            if writable:
                return
            if readable:
                self.read()  # keeps the heartbeat clock and what arrives (TLS may need it)
            now = time.monotonic()
            if now - started > STALLED_WRITE_S:
                raise WireError(f"the broker took no data for {STALLED_WRITE_S:.0f}s")
            if self.heartbeat and now - self.last_read > 2 * self.heartbeat:
                raise WireError(f"no data from the broker for {2 * self.heartbeat}s while "
                                "writing (missed heartbeats)")

    def tick(self) -> None:
        """Heartbeats: one sent after heartbeat/2 without writing; a broker silent for two
        heartbeats is taken for dead."""
        if not self.heartbeat:
            return
        now = time.monotonic()
        if now - self.last_write >= self.heartbeat / 2:
            self.send(f.HEARTBEAT)
        if now - self.last_read > 2 * self.heartbeat:
            raise WireError(f"no data from the broker for {2 * self.heartbeat}s (missed "
                            "heartbeats)")

    # -- reading ---------------------------------------------------------------------------------

    def read(self) -> bool:
        """Appends what the socket has to rbuf without waiting; False when it had nothing."""
        sock = self.sock
        try:
            data = sock.recv(_RECV)
        except _WOULD_BLOCK:
            return False
        if not data:
            raise WireError("connection lost: the broker closed the socket (EOF)")
        self.rbuf += data
        while len(data) == _RECV or (self._tls and sock.pending()):  # type: ignore[attr-defined]
            try:
                data = sock.recv(_RECV)
            except _WOULD_BLOCK:
                break
            if not data:
                raise WireError("connection lost: the broker closed the socket (EOF)")
            self.rbuf += data
        self.last_read = time.monotonic()
        return True

    def wait(self, timeout_s: float) -> None:
        """Waits up to timeout_s for bytes from the broker or a wake-up, reading them."""
        if self._tls and self.sock.pending():  # type: ignore[attr-defined]
            self.read()
            return
        writing = [self.sock] if self._current is not None or self.out else []
        readable, writable, _ = select.select([self.sock, self.wake_r], writing, [], timeout_s)
        if self.wake_r in readable:
            with contextlib.suppress(*_WOULD_BLOCK):
                self.wake_r.recv(4096)
        if self.sock in readable:
            self.read()
        if writable:
            self.flush()

    def wake(self) -> None:
        """Makes a poll() blocked in wait() return (from any thread)."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"x")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.sock, self.wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()


# -- opening --------------------------------------------------------------------------------------

def open_wire(settings: Settings, ep: Endpoint, name: str) -> Wire:
    """A connection to one node after the AMQP handshake; raises the BrokerError a failed
    connect leaves as (broker/connecting.py words it)."""
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((ep.host, ep.port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ep.tls is not None:
            sock = ep.tls.wrap_socket(sock, server_hostname=ep.host)
        frame_max, heartbeat = _handshake(sock, ep, name, settings.broker_heartbeat_s)
        return Wire(sock, frame_max, heartbeat)
    except (OSError, WireError, f.ProtocolError, struct.error, ValueError) as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, TimeoutError):
            detail = (f"TimeoutError: no answer from {ep.address} within "
                      f"{CONNECT_TIMEOUT_S:.0f}s (connect, TLS or AMQP handshake)")
        else:
            detail = f"{type(exc).__name__}: {str(exc) or repr(exc)}"
        raise connect_error(settings, ep.address, ep.username, ep.vhost, ep.tls is not None,
                            detail, isinstance(exc, Refused)) from None


def _handshake(sock: socket.socket, ep: Endpoint, name: str, heartbeat: int
               ) -> tuple[int, int]:
    """Start/StartOk (PLAIN), Tune/TuneOk, Open/OpenOk; (frame_max, heartbeat)."""
    reader = _HandshakeReader(sock)
    sock.sendall(f.PROTOCOL_HEADER)
    method, payload = reader.method()
    if method != f.START:
        raise f.ProtocolError(f"expected Connection.Start, got method {method:#x}")
    offset = f.decode_table(payload, 2)[1]
    mechanisms, _ = f.decode_longstr(payload, offset)
    if b"PLAIN" not in mechanisms.split():
        raise f.ProtocolError(f"the broker offers no PLAIN login ({mechanisms!r})")
    client = {"product": "Droplet", "platform": f"Python {platform.python_version()}",
              "connection_name": name, "capabilities": _CAPABILITIES}
    login = b"\0" + ep.username.encode() + b"\0" + ep.password.encode()
    sock.sendall(f.method_frame(0, f.START_OK, f.encode_table(client) + f.shortstr("PLAIN")
                                + f.longstr(login) + f.shortstr("en_US")))
    reader.refusal = "authentication"
    method, payload = reader.method()
    if method != f.TUNE:
        raise f.ProtocolError(f"expected Connection.Tune, got method {method:#x}")
    channel_max, frame_max, _suggested = struct.unpack_from(">HIH", payload)
    frame_max = frame_max or 131072
    sock.sendall(f.method_frame(0, f.TUNE_OK, struct.pack(">HIH", channel_max, frame_max,
                                                          heartbeat))
                 + f.method_frame(0, f.OPEN, f.shortstr(ep.vhost) + f.shortstr("") + b"\x00"))
    reader.refusal = "access to the virtual host"
    method, _ = reader.method()
    if method != f.OPEN_OK:
        raise f.ProtocolError(f"expected Connection.OpenOk, got method {method:#x}")
    return frame_max, heartbeat


class _HandshakeReader:
    """Blocking reads of the handshake's method frames, within HANDSHAKE_TIMEOUT_S."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
        self.refusal = ""  # what a close means at this stage ("" before StartOk)

    def method(self) -> tuple[int, bytes]:
        while True:
            ftype, channel, payload = self._frame()
            if ftype == f.FRAME_HEARTBEAT:
                continue
            if ftype != f.FRAME_METHOD or channel != 0:
                raise f.ProtocolError(f"unexpected frame type {ftype} during the handshake")
            method = struct.unpack_from(">I", payload)[0]
            if method == f.CLOSE:
                self.sock.sendall(f.method_frame(0, f.CLOSE_OK))
                code, text = close_reason(payload, 4)
                error = f"ConnectionClosedByBroker: ({code}) {text!r}"
                if self.refusal or code in (403, 530):
                    raise Refused(f"{self.refusal or 'login'} refused: {error}")
                raise WireError(error)
            return method, payload[4:]

    def _frame(self) -> tuple[int, int, bytes]:
        while True:
            if len(self.buf) >= 7:
                ftype, channel, size = f.FRAME_HEAD.unpack_from(self.buf)
                if len(self.buf) >= 8 + size:
                    if self.buf[7 + size] != f.FRAME_END:
                        raise f.ProtocolError("bad frame end during the handshake")
                    payload = bytes(self.buf[7:7 + size])
                    del self.buf[:8 + size]
                    return ftype, channel, payload
                if self.buf.startswith(b"AMQP"):
                    raise f.ProtocolError(f"the broker wants protocol {bytes(self.buf)!r}")
            if time.monotonic() > self.deadline:
                raise TimeoutError("handshake took too long")
            data = self.sock.recv(_RECV)
            if not data:
                error = "StreamLostError: connection lost: the broker closed the socket (EOF)"
                if self.refusal:
                    raise Refused(f"probable {self.refusal} refusal: {error}")
                raise WireError(error)
            self.buf += data


def close_reason(payload: bytes | bytearray | memoryview, offset: int) -> tuple[int, str]:
    """(reply code, reply text) of a Connection.Close or Channel.Close's arguments."""
    code = struct.unpack_from(">H", payload, offset)[0]
    text, _ = f.decode_shortstr(payload, offset + 2)
    return code, text


def broker_error(action: str, exc: BaseException) -> BrokerError:
    """Any failure of an operation, as the BrokerError it leaves as."""
    detail = str(exc) or repr(exc)
    return BrokerError(f"RabbitMQ {action} failed: {type(exc).__name__}: {detail}")
