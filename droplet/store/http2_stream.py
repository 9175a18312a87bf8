"""One long-lived server-streaming gRPC call on a connection of its own: a lean etcd watch.

A watch over grpcio keeps its poller and timer threads busy, and two of our own per stream:
an idle worker's three watches and its lease refreshes woke it some 50 times a second (about
a fifth of a core's percent each, 30 idle workers a few percent of a 2-core host). Here the
watch's one thread sleeps in `recv` until etcd sends something. The request stream stays
open (etcd ends a watch whose client half-closes); answers arrive as DATA frames carrying
length-prefixed messages, and the stream's and connection's windows are opened again as they
are read. `cancel` shuts the socket down, which wakes the reader from another thread.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator

import hpack

from droplet.store.grpc_answer import Answer
from droplet.store.http2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    RST_STREAM,
    WINDOW_UPDATE,
    CallFailure,
    Http2Connection,
    frame,
    header_fragment,
    padding,
)

# A quiet watch is normal, but so is a member that stopped (SIGSTOP, a cut network) without
# closing anything: after this long without a frame the stream pings, and a peer that sends
# nothing within the next _PING_TIMEOUT_S is taken for gone (what grpcio's keepalive did, at
# its 6 s and 4 s; etcd refuses pings more often than every 5 s).
_PING_AFTER_S = 6.0
_PING_TIMEOUT_S = 4.0
# A member that finds the pings too frequent (its --grpc-keepalive-min-time set above 6 s)
# ends the connection with a GOAWAY ENHANCE_YOUR_CALM "too_many_pings": every watch of the
# process then pings half as often again (grpcio doubles its keepalive time the same way),
# or each new watch was cut again some 20 s later, and its owner re-read everything each time.
_ENHANCE_YOUR_CALM = 11
_ping_slowdown = 1  # the factor on _PING_AFTER_S, doubled at each "too_many_pings"
_PING_SLOWDOWN_MAX = 64
_REOPEN_AT = 1 << 20  # bytes read on the stream before its window is opened again by them


class Http2Stream(Http2Connection):
    """A connection that carries one streaming call and yields its answers (raw messages)."""

    _stream_id = 0

    def __init__(self, host: str, port: int, timeout_s: float,
                 tls: ssl.SSLContext | None = None) -> None:
        self._closing = threading.Lock()  # cancel() and the reader's close() one at a time
        super().__init__(host, port, timeout_s, tls)

    def open(self, head: bytes, message: bytes, timeout_s: float) -> None:
        """Sends the call's headers and its one request, leaving the request stream open."""
        deadline = self._deadline = time.monotonic() + timeout_s
        body = b"\x00" + struct.pack(">I", len(message)) + message
        if len(body) > min(self._max_frame, self._stream_window_start, 65535):
            raise CallFailure("INVALID_ARGUMENT", "a streaming request larger than a frame")
        try:
            self._greet(deadline)
            self._stream_id = self._next_stream
            self._next_stream += 2
            self._send(bytes(self._owed) + frame(HEADERS, END_HEADERS, self._stream_id, head)
                       + frame(DATA, 0, self._stream_id, body), deadline)
            self._owed.clear()
        except CallFailure:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise CallFailure("UNAVAILABLE", f"connection to {self.address} lost: {exc}"
                              ) from None

    def messages(self) -> Iterator[bytes]:
        """The answers as they come, until the call ends: then CallFailure with its status
        (OK too: a watch is not meant to end), or UNAVAILABLE when the connection goes (or
        the peer sends what we cannot read: a bad frame, a header block that does not
        decode), as a unary call's would (store/http2.py)."""
        try:
            yield from self._read_messages()
        except (OSError, ValueError, hpack.HPACKError) as exc:
            raise CallFailure("UNAVAILABLE", f"stream from {self.address} lost: {exc}"
                              ) from None
        finally:  # also when the reader stops reading (the generator closed): its socket
            self.close()

    def _read_messages(self) -> Iterator[bytes]:
        pending = bytearray()
        unacknowledged = 0
        answer = Answer()
        stream = self._stream_id
        pinged = False
        while True:
            self._deadline = time.monotonic() + (
                _PING_TIMEOUT_S if pinged else _PING_AFTER_S * _ping_slowdown)
            try:
                parsed = self._read_frame(self._deadline)
            except TimeoutError:
                if pinged:
                    raise CallFailure("UNAVAILABLE", f"{self.address} answered no ping in "
                                                     f"{_PING_TIMEOUT_S:g} s") from None
                self._sock.sendall(frame(PING, 0, 0, b"droplet!"))
                pinged = True
                continue
            pinged = False  # whatever came, the peer is there
            kind, flags, on, payload = parsed
            if on == stream and kind == DATA:
                self._handle(parsed, 0, None)  # the connection's window
                pending += payload[1:len(payload) - padding(payload)] if flags & PADDED \
                    else payload
                unacknowledged += len(payload)
                while len(pending) >= 5 and len(pending) >= 5 + (
                        size := int.from_bytes(pending[1:5], "big")):
                    if pending[0] != 0:
                        raise CallFailure("INTERNAL", f"{self.address} sent a compressed "
                                                      "message")
                    message = bytes(pending[5:5 + size])
                    del pending[:5 + size]
                    yield message
                if flags & END_STREAM:
                    raise CallFailure("INTERNAL", f"{self.address} ended a stream without "
                                                  "its status")
                if unacknowledged >= _REOPEN_AT:
                    self._owed += frame(WINDOW_UPDATE, 0, stream,
                                        struct.pack(">I", unacknowledged))
                    unacknowledged = 0
            elif on == stream and kind == HEADERS:
                block, ends = self._whole_block(flags, header_fragment(flags, payload))
                answer.headers(self._decode(block), bool(ends & END_STREAM))
                if answer.status is not None:
                    raise CallFailure(answer.status if answer.status != "OK" else "UNAVAILABLE",
                                      answer.details or "the stream ended")
            elif on == stream and kind == RST_STREAM:
                code = int.from_bytes(payload[:4], "big")
                raise CallFailure("UNAVAILABLE", f"{self.address} reset the stream "
                                                 f"(HTTP/2 error {code})")
            else:
                if kind == GOAWAY:
                    _calmed(payload)
                self._handle(parsed, 0, None)  # settings, pings, windows, a GOAWAY
            if self._owed:  # answered now, not with a next request: there is none
                self._sock.sendall(bytes(self._owed))
                self._owed.clear()

    def cancel(self) -> None:
        """Ends the stream from any thread: the reader wakes to the end of its socket and
        closes it. Only shut down here, never closed: a reader about to wait on the socket's
        number would wait on whatever connection opened next under it (10 watches cancelled
        at once left some waiting forever)."""
        with self._closing:  # not while the reader closes it: its number may be reused
            self.broken = True
            if self._sock.fileno() >= 0:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._closing:
            super().close()


def _calmed(goaway: bytes) -> None:
    """Pings half as often from now on when a GOAWAY says ours were too many."""
    global _ping_slowdown
    if (int.from_bytes(goaway[4:8], "big") == _ENHANCE_YOUR_CALM
            and b"too_many_pings" in goaway[8:]):
        _ping_slowdown = min(_ping_slowdown * 2, _PING_SLOWDOWN_MAX)
