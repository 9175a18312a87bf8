"""The lean transport's inbound side: frames parsed out of the read buffer and dispatched, and
the synchronous methods (declare, consume, get...) that wait for their reply.

Apart from the BrokerConnection methods (broker/amqp.py) because this is the one loop every
inbound byte goes through, written for the hot path: a delivery's three frames are unpacked in
place from the bytearray with struct (no frame objects), whatever arrived in part stays in the
buffer until the rest comes, and confirms, returns and cancels are only recorded here (their
callbacks run from the next poll, where publishing is allowed). Channel and connection closes
from the broker are answered here (CloseOk), then surface as errors where they matter.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from droplet.broker import amqp_frames as f
from droplet.broker.amqp_wire import Wire, WireError, close_reason
from droplet.broker.confirms import PublisherConfirms
from droplet.broker.interface import Delivery

BLOCKED_TIMEOUT_S = 60.0  # a connection the broker blocks (an alarm) longer is given up

_HEAD = f.FRAME_HEAD.unpack_from
_U32 = struct.Struct(">I").unpack_from
_TAG_REDELIVERED = struct.Struct(">QB").unpack_from
_CONTENT = struct.Struct(">QH").unpack_from  # body size, property flags
_ACK_NACK = struct.Struct(">QB").unpack_from
_DELIVER, _GET_OK, _RETURN = f.DELIVER, f.GET_OK, f.RETURN
_ACK, _NACK = f.ACK, f.NACK


class ChannelClosed(Exception):
    """The broker closed a channel in reply to a synchronous method (a refused declare, a
    passive declare of a missing queue)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"({code}, {text!r})")
        self.code = code
        self.text = text


class AmqpReader:
    """The state the parser fills: inbox, confirms, RPC replies, closed channels."""

    def __init__(self, wire: Wire, confirms: PublisherConfirms | None) -> None:
        self._wire = wire
        self._pending = confirms
        self._confirm_channel = 0  # channel whose Ack/Nack/Return feed _pending
        self._inbox: list[Delivery] = []
        self._got: Delivery | None = None  # the message of the last Basic.GetOk
        self._consumers: dict[str, str] = {}  # consumer tag -> queue
        self._cancelled: list[str] = []  # queues whose consumer the broker cancelled
        self._content: dict[int, list[Any]] = {}  # channel -> message being received
        self._replies: dict[int, tuple[int, bytes]] = {}  # channel -> RPC reply
        self._dead: dict[int, str] = {}  # channels the broker closed -> why
        self._callbacks: list[Callable[[], None]] = []  # run from the next poll/pump
        self._threadsafe: deque[Callable[[], None]] = deque()
        self._blocked_since: float | None = None

    def _parse(self) -> None:
        """Dispatches every whole frame in the read buffer; a partial one waits there."""
        buf = self._wire.rbuf
        size_all = len(buf)
        off = 0
        while size_all - off >= 8:
            ftype, ch, size = _HEAD(buf, off)
            end = off + 7 + size
            if end >= size_all:
                break
            if buf[end] != f.FRAME_END:
                raise f.ProtocolError(f"frame without its end marker (type {ftype})")
            if ftype == 3:  # body
                msg = self._content[ch]
                if not msg[6] and size == msg[5]:
                    self._complete(ch, msg, bytes(buf[off + 7:end]))
                else:
                    msg[6].append(bytes(buf[off + 7:end]))
                    msg[5] -= size
                    if msg[5] <= 0:
                        self._complete(ch, msg, b"".join(msg[6]))
            elif ftype == 2:  # content header
                msg = self._content[ch]
                body_size, flags = _CONTENT(buf, off + 11)
                msg[4] = f.decode_properties(buf, off + 21, flags)
                msg[5] = body_size
                if not body_size:
                    self._complete(ch, msg, b"")
            elif ftype == 1:
                method = _U32(buf, off + 7)[0]
                if method == _DELIVER:
                    p = off + 12 + buf[off + 11]
                    tag, redelivered = _TAG_REDELIVERED(buf, p)
                    self._content[ch] = [_DELIVER, buf[off + 12:p].decode(), tag,
                                         bool(redelivered & 1), None, 0, []]
                elif method in (_ACK, _NACK):
                    tag, multiple = _ACK_NACK(buf, off + 11)
                    if self._pending is not None and ch == self._confirm_channel:
                        self._pending.confirmed(tag, bool(multiple & 1), method == _ACK)
                else:
                    self._on_method(ch, method, bytes(buf[off + 11:end]))
            elif ftype != f.FRAME_HEARTBEAT:
                raise f.ProtocolError(f"unknown frame type {ftype}")
            off = end + 1
        if off:
            del buf[:off]

    def _complete(self, ch: int, msg: list[Any], body: bytes) -> None:
        """A message's last frame arrived."""
        del self._content[ch]
        headers, priority, correlation_id, reply_to, message_id = msg[4]
        kind = msg[0]
        if kind == _DELIVER:
            self._inbox.append(Delivery(self._consumers.get(msg[1], ""), body, msg[2],
                                        reply_to, correlation_id, msg[3], headers, "",
                                        priority))
        elif kind == _GET_OK:
            self._got = Delivery(msg[1], body, msg[2], reply_to, correlation_id, msg[3],
                                 headers, "", priority)
        elif self._pending is not None and ch == self._confirm_channel:  # a Basic.Return
            self._pending.returned(message_id)

    def _on_method(self, ch: int, method: int, args: bytes) -> None:
        """Every method but Deliver, Ack and Nack (args: after the method id)."""
        if method == _GET_OK:
            tag, redelivered = _TAG_REDELIVERED(args, 0)
            self._content[ch] = [_GET_OK, "", tag, bool(redelivered & 1), None, 0, []]
            self._replies[ch] = (method, args)
        elif method == _RETURN:
            self._content[ch] = [_RETURN, "", 0, False, None, 0, []]
        elif method == f.CH_CLOSE:
            self._wire.out.append(f.method_frame(ch, f.CH_CLOSE_OK))
            code, text = close_reason(args, 0)
            self._dead[ch] = f"the broker closed channel {ch}: ({code}) {text}"
            self._replies[ch] = (method, args)
            self._content.pop(ch, None)
        elif method == f.CANCEL:  # the broker cancelled a consumer (its queue was deleted)
            tag, offset = f.decode_shortstr(args, 0)
            self._cancelled.append(self._consumers.get(tag, "?"))
            if not args[offset] & 1:
                self._wire.out.append(f.method_frame(ch, f.CANCEL_OK, f.shortstr(tag)))
        elif method == f.CLOSE:
            self._wire.out.append(f.method_frame(0, f.CLOSE_OK))
            code, text = close_reason(args, 0)
            try:
                self._wire.flush()
            finally:
                self._wire.close()
            raise WireError(f"ConnectionClosedByBroker: ({code}) {text}")
        elif method == f.BLOCKED:
            self._blocked_since = time.monotonic()
        elif method == f.UNBLOCKED:
            self._blocked_since = None
        else:
            self._replies[ch] = (method, args)

    def _service(self) -> None:
        """Heartbeats, a connection blocked too long, and what parsing queued to write."""
        self._wire.tick()
        if self._blocked_since is not None and (
                time.monotonic() - self._blocked_since > BLOCKED_TIMEOUT_S):
            raise WireError(f"the broker blocked the connection for over {BLOCKED_TIMEOUT_S:.0f}s")
        if self._wire.out:
            self._wire.flush()

    def _wait_step(self, timeout_s: float) -> None:
        """One wait for input (bounded so that heartbeats are kept), then parse and service."""
        interval = self._wire.heartbeat / 4 if self._wire.heartbeat else 1.0
        self._wire.wait(min(timeout_s, interval))
        self._parse()
        self._service()

    def _rpc(self, ch: int, method: int, args: bytes, *expect: int) -> tuple[int, bytes]:
        """Sends a synchronous method and waits for its reply (method, args); what else
        arrives meanwhile is handled as usual. A channel the broker closes raises
        ChannelClosed."""
        if ch in self._dead:
            raise WireError(self._dead[ch])
        self._replies.pop(ch, None)
        self._wire.send(f.method_frame(ch, method, args))
        while True:
            reply = self._replies.pop(ch, None)
            if reply is not None:
                if reply[0] == f.CH_CLOSE:
                    code, text = close_reason(reply[1], 0)
                    raise ChannelClosed(code, text)
                if reply[0] in expect:
                    return reply
                raise f.ProtocolError(f"unexpected reply {reply[0]:#x} to method {method:#x}")
            if self._wire.closed:
                raise WireError("connection closed")
            self._wait_step(1.0)

    def _open_channel(self, ch: int, confirm: bool) -> None:
        self._dead.pop(ch, None)
        self._rpc(ch, f.CH_OPEN, f.shortstr(""), f.CH_OPEN_OK)
        if confirm:
            self._rpc(ch, f.SELECT, b"\x00", f.SELECT_OK)

    def _run_callbacks(self) -> None:
        """Confirm callbacks and call_soon_threadsafe's functions, outside frame parsing."""
        threadsafe = self._threadsafe
        while threadsafe:
            threadsafe.popleft()()
        callbacks = self._callbacks
        if callbacks:
            todo = callbacks[:]
            callbacks.clear()  # what these schedule runs from the next poll
            for fn in todo:
                fn()
