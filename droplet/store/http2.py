"""One HTTP/2 connection that makes unary gRPC calls, one at a time: the lean path to etcd.

Why not gRPC's own client: on the small VMs Droplet runs on, a unary call through grpcio
costs some 400 us of CPU in the caller (about sixteen system calls and hand-offs between its
poller threads), more than the etcd write it carries; this costs about 110 us and two system
calls, and a durable call's "stored" stage is mostly that write. It speaks only what etcd's
unary KV methods need (see store/etcd_lean.py): requests go out as one HEADERS and the DATA
frames the peer's windows allow; the answer is read on the caller's thread until its
trailers. We announce a zero-size HPACK table, so once the peer has taken our settings every
header block it sends decodes alone, and each distinct one is decoded once (`_DECODED`).

Failures are `CallFailure`s with a gRPC status code (UNAVAILABLE when the connection is lost,
DEADLINE_EXCEEDED when the answer is late): the store's error handling reads them as it reads
grpcio's. A connection that failed is closed, never reused.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable

import hpack

from droplet.store.grpc_answer import Answer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _INITIAL_WINDOW, _MAX_FRAME = 1, 2, 4, 5
_BIG_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65535
_RECV_BYTES = 256 * 1024
_MAX_FRAME_WE_TAKE = 16384  # the default SETTINGS_MAX_FRAME_SIZE, which we keep
_DECODED: dict[bytes, list[tuple[str, str]]] = {}  # header blocks of a zero-size table
_DECODED_MAX = 512
_FRAME_HEAD = struct.Struct(">I")

# gRPC status codes by number, by the names grpcio gives them.
class CallFailure(Exception):
    """A call that did not succeed: its gRPC status (a name grpcio gives it) and words."""

    def __init__(self, status: str, details: str) -> None:
        super().__init__(f"{status}: {details}")
        self.status = status
        self.details = details


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (_FRAME_HEAD.pack(len(payload))[1:] + bytes((kind, flags))
            + _FRAME_HEAD.pack(stream) + payload)


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def header_block(headers: list[tuple[str, str]]) -> bytes:
    """Headers as literals never added to the peer's table (so none of our state is shared)."""
    out = bytearray()
    for name, value in headers:
        raw_name, raw_value = name.encode(), value.encode()
        out += b"\x00" + _hpack_int(len(raw_name), 7) + raw_name
        out += _hpack_int(len(raw_value), 7) + raw_value
    return bytes(out)


class Http2Connection:
    """A client connection to host:port (TLS with `tls`), for one unary call at a time."""

    def __init__(self, host: str, port: int, timeout_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self.address = f"{host}:{port}"
        self.broken = False
        self.last_used = time.monotonic()
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = _handshake(tls, sock, host, self.address)
                if sock.selected_alpn_protocol() != "h2":
                    sock.close()
                    raise CallFailure("UNAVAILABLE", f"{self.address} does not speak HTTP/2")
            settings = struct.pack(">HIHIHI", _HEADER_TABLE_SIZE, 0, _ENABLE_PUSH, 0,
                                   _INITIAL_WINDOW, _BIG_WINDOW)
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(
                WINDOW_UPDATE, 0, 0, struct.pack(">I", _BIG_WINDOW - _DEFAULT_WINDOW)))
        except (OSError, ssl.SSLError) as exc:
            if sock is not None:  # (a failed handshake closed it already: closing is a no-op)
                sock.close()
            raise CallFailure("UNAVAILABLE",
                              f"failed to connect to {self.address}: {exc}") from None
        self._sock = sock
        self._buffer = bytearray()
        self._next_stream = 1
        self._max_frame = 16384
        self._send_window = _DEFAULT_WINDOW  # the connection's
        self._stream_window_start = _DEFAULT_WINDOW
        self._stream_window = 0
        self._received = 0  # DATA bytes since we last opened our connection window again
        self._last_stream = _BIG_WINDOW  # a GOAWAY's: streams above it were not processed
        self._decoder = hpack.Decoder()
        self._table_empty = False  # the peer applied our zero-size table
        self._deadline = 0.0  # of the call in progress
        self._owed = bytearray()  # frames to go out with the next request (ping answers)
        self._greeted = False  # the peer's SETTINGS came

    def fileno(self) -> int:
        return self._sock.fileno()

    def usable(self) -> bool:
        """Whether the connection can carry another call, after reading (without waiting)
        what the peer sent while it was idle: pings and settings are taken in, a GOAWAY or
        the end of the connection (a restarted etcd) make it unusable, so it is replaced
        before a request is lost on it."""
        if self.broken:
            return False
        try:
            poller = select.poll()  # not select.select: no limit on the fd's number
            poller.register(self._sock, select.POLLIN)
            if not poller.poll(0):
                return True
            deadline = self._deadline = time.monotonic() + 0.01
            self._sock.settimeout(0.01)
            data = self._sock.recv(_RECV_BYTES)
            if not data:
                raise OSError("closed by the peer")
            (buffer := self._buffer).extend(data)
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                self._handle(self._read_frame(deadline), 0, None)
        except (CallFailure, OSError, ssl.SSLError, hpack.HPACKError, ValueError):
            self.close()
        return not self.broken

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def call(self, head: bytes, message: bytes, timeout_s: float,
             meanwhile: Callable[[], None] | None = None) -> bytes:
        """Sends one request (its header block and protobuf body) and returns the answer's
        protobuf body, or raises CallFailure. `meanwhile` runs once the request is sent,
        while the peer works on it (it must not raise)."""
        deadline = self._deadline = time.monotonic() + timeout_s
        stream = self._next_stream
        self._next_stream += 2
        self._stream_window = self._stream_window_start
        body = b"\x00" + _FRAME_HEAD.pack(len(message)) + message
        try:
            if not self._greeted:
                self._greet(deadline)
            answer = Answer()
            self._send_request(stream, head, body, deadline, answer)
            if meanwhile is not None and answer.status is None:
                meanwhile()
            return self._read_answer(stream, deadline, answer)
        except CallFailure:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise CallFailure("DEADLINE_EXCEEDED",
                              f"no answer from {self.address} in {timeout_s:g} s") from None
        except (OSError, ssl.SSLError, hpack.HPACKError, ValueError) as exc:
            self.close()
            raise CallFailure("UNAVAILABLE",
                              f"connection to {self.address} lost: {exc}") from None
        except BaseException:
            # Anything else (a time limit's or a cancel's signal mid-read): the connection may
            # be half-read, so it is closed, not left to the garbage collector or another call.
            self.close()
            raise
        finally:
            self.last_used = time.monotonic()

    def _greet(self, deadline: float) -> None:
        """Reads the peer's first frame, which an HTTP/2 server makes its SETTINGS: anything
        else (a TLS alert from a port that wants TLS, an HTTP/1 answer) is no etcd to talk to."""
        try:
            first = self._read_frame(deadline)
        except OSError as exc:
            raise CallFailure("UNAVAILABLE", f"{self.address}: socket closed before HTTP/2 "
                                             f"settings ({exc})") from None
        if first[0] != SETTINGS or first[1] & ACK:
            raise CallFailure("UNAVAILABLE", f"{self.address}: socket closed: the peer does not "
                                             "speak HTTP/2 (its first frame is no SETTINGS)")
        self._greeted = True
        self._handle(first, 0, None)

    def _send_request(self, stream: int, head: bytes, body: bytes, deadline: float,
                      answer: Answer) -> None:
        """Sends the request as far as the windows let it; a peer that answers before it has
        the whole body (grpc's "message larger than max") ends the call early: its status is
        kept in `answer`, not lost to the reset that follows it."""
        out = frame(HEADERS, END_HEADERS, stream, head)
        sent = 0
        while True:
            room = min(self._send_window, self._stream_window, self._max_frame)
            if room <= 0:
                self._send(out + self._take_owed(), deadline)
                out = b""
                self._handle(self._read_frame(deadline), stream, answer)  # until a window opens
                if answer.status is not None:
                    return  # answered already: the rest of the body is not wanted
                continue
            chunk = body[sent:sent + room]
            sent += len(chunk)
            self._send_window -= len(chunk)
            self._stream_window -= len(chunk)
            last = sent >= len(body)
            out += frame(DATA, END_STREAM if last else 0, stream, chunk)
            if last:
                self._send(out + self._take_owed(), deadline)
                return

    def _take_owed(self) -> bytes:
        """Ping answers and window updates owed, sent behind a request's frames."""
        owed = bytes(self._owed)
        self._owed.clear()
        return owed

    def _read_answer(self, stream: int, deadline: float, answer: Answer) -> bytes:
        while answer.status is None:
            self._handle(self._read_frame(deadline), stream, answer)
        if answer.status != "OK":
            raise CallFailure(answer.status, answer.details)
        data = bytes(answer.data)
        if len(data) < 5 or data[0] != 0:
            raise CallFailure("INTERNAL", f"{self.address} sent a body that is not a "
                                          "plain gRPC message")
        return data[5:5 + int.from_bytes(data[1:5], "big")]

    def _handle(self, parsed: tuple[int, int, int, bytes], stream: int,
                answer: Answer | None) -> None:
        kind, flags, on, payload = parsed
        if kind == DATA:
            self._received += len(payload)
            if flags & PADDED:
                payload = payload[1:len(payload) - padding(payload)]
            if on == stream and answer is not None:
                answer.data += payload
                if flags & END_STREAM:
                    answer.fail("INTERNAL", f"{self.address} ended a call without its status")
            if self._received > _BIG_WINDOW // 2:
                self._owed += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received))
                self._received = 0
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                payload = header_fragment(flags, payload)
            block, ends = self._whole_block(flags, payload)
            headers = self._decode(block)
            if on == stream and answer is not None:
                answer.headers(headers, bool(ends & END_STREAM))
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
            self._sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            # Answered with the next request, not by a write of its own: etcd's gRPC server
            # pings after nearly every request it reads (to size its windows), and a late
            # answer costs it nothing but a larger estimate. It goes after that request's
            # body (_take_owed): etcd reads the request while this ping is still out and does
            # not ping for it, so it pings every other request, not every one.
            self._owed += frame(PING, ACK, 0, payload)
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if on == 0:
                self._send_window += increment
            elif on == stream:
                self._stream_window += increment
        elif kind == RST_STREAM and on == stream:
            code = int.from_bytes(payload[:4], "big")
            raise CallFailure("UNAVAILABLE" if code in (0x7, 0x8) else "INTERNAL",
                              f"{self.address} reset the call (HTTP/2 error {code})")
        elif kind == GOAWAY:
            self._last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            self.broken = True  # no new call on it; this one may still be answered
            if stream > self._last_stream:
                raise CallFailure("UNAVAILABLE", f"{self.address} is going away "
                                                 f"({payload[8:].decode(errors='replace')})")

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == _MAX_FRAME:
                self._max_frame = value
            elif key == _INITIAL_WINDOW:
                self._stream_window += value - self._stream_window_start
                self._stream_window_start = value
            elif key == _HEADER_TABLE_SIZE:
                pass  # the size of OUR encoder's table at the peer: we never index

    def _whole_block(self, flags: int, fragment: bytes) -> tuple[bytes, int]:
        """A header block and its HEADERS flags, with the CONTINUATION frames that follow."""
        block, ends = fragment, flags
        while not flags & END_HEADERS:
            kind, flags, _on, more = self._read_frame(self._deadline)
            if kind != CONTINUATION:
                raise ValueError("a header block cut by another frame")
            block += more
        return block, ends

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        if self._table_empty:
            known = _DECODED.get(block)
            if known is not None:
                return known
        was_empty = self._table_empty
        headers = [(str(n), str(v)) for n, v in self._decoder.decode(block)]
        table = self._decoder.header_table
        # Stateless (so remembered) only from and to an empty zero-size table.
        self._table_empty = table.maxsize == 0 and not table.dynamic_entries
        if was_empty and self._table_empty and len(_DECODED) < _DECODED_MAX:
            _DECODED[block] = headers
        return headers

    def _send(self, data: bytes, deadline: float) -> None:
        if data:
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            self._sock.sendall(data)

    def _read_frame(self, deadline: float) -> tuple[int, int, int, bytes]:
        buffer = self._buffer
        while len(buffer) < 9 or len(buffer) < 9 + (int.from_bytes(buffer[:3], "big")):
            if len(buffer) >= 3 and int.from_bytes(buffer[:3], "big") > _MAX_FRAME_WE_TAKE:
                raise OSError(f"a frame larger than we allow ({bytes(buffer[:9])!r})")
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self._sock.recv(_RECV_BYTES)
            if not data:
                raise OSError("closed by the peer")
            buffer += data
        size = int.from_bytes(buffer[:3], "big")
        if size > _MAX_FRAME_WE_TAKE:  # (it came whole in one read)
            raise OSError(f"a frame larger than we allow ({bytes(buffer[:9])!r})")
        kind, flags = buffer[3], buffer[4]
        on = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
        payload = bytes(buffer[9:9 + size])
        del buffer[:9 + size]
        return kind, flags, on, payload


def _handshake(tls: ssl.SSLContext, sock: socket.socket, host: str,
               address: str) -> ssl.SSLSocket:
    try:
        return tls.wrap_socket(sock, server_hostname=host)
    except (ssl.SSLEOFError, ConnectionResetError) as exc:
        sock.close()  # what a server without TLS does at a TLS hello: worded as gRPC does
        raise CallFailure("UNAVAILABLE", f"TLS handshake with {address} failed "
                                         f"(socket closed): {exc}") from None
    except (OSError, ssl.SSLError):
        sock.close()
        raise


def header_fragment(flags: int, payload: bytes) -> bytes:
    start, end = 0, len(payload)
    if flags & PADDED:
        start, end = 1, end - padding(payload)
    if flags & PRIORITY:
        start += 5
    return payload[start:end]


def padding(payload: bytes) -> int:
    """The pad length of a PADDED frame; a frame too short for its padding is a protocol
    error (ValueError: the connection is lost), not an IndexError leaving it open."""
    if not payload or payload[0] >= len(payload):
        raise ValueError(f"a padded frame shorter than its padding ({payload[:1]!r})")
    return payload[0]
