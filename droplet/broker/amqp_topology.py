"""The lean transport's declaring and inspecting of queues (broker/amqp.py's connection).

Apart from publishing and consuming because a refusal here is not a broken connection:
RabbitMQ refuses a queue declared before with other arguments (an older Droplet, another
max_priority or queue_type) by closing the channel, and a passive declare of a missing queue
does the same. Both close only the channel, which is reopened; the first must tell the operator
to migrate the queues (broker/refusals.py) rather than reconnect forever.
"""

from __future__ import annotations

import struct

from droplet.broker import amqp_frames as f
from droplet.broker.amqp_reader import AmqpReader, ChannelClosed
from droplet.broker.amqp_wire import WireError, broker_error
from droplet.broker.interface import Topology
from droplet.broker.refusals import PRECONDITION_FAILED, declare_refusal
from droplet.errors import BrokerError, QueueArgumentsError

# What an operation may fail with; each leaves as a BrokerError (KeyError, IndexError: frames
# that do not fit what came before, i.e. a garbled stream; ChannelClosed: the broker closed the
# channel, e.g. a get or consume of a missing queue, where it escaped as no BrokerError:
# tests/attack/test_missing_queue_errors.py). Declares and queue_info catch it first.
FAILURES = (OSError, WireError, f.ProtocolError, struct.error, KeyError, IndexError,
            ChannelClosed)
_FAILURES = FAILURES


class AmqpTopology(AmqpReader):
    """Declares and inspects on the main channel (opened by the connection's _open_main)."""

    _main: int

    def _open_main(self) -> None:
        raise NotImplementedError

    def _failed(self, action: str, exc: BaseException) -> BrokerError:
        """A failure of the connection: it is closed (is_open turns False, as pika's) and
        leaves as a BrokerError naming the action."""
        self._wire.close()
        return broker_error(action, exc)

    def _reopen_main(self) -> None:
        try:
            self._open_main()
        except _FAILURES as exc:
            raise self._failed("reopen channel", exc) from None

    def declare(self, topology: Topology) -> None:
        ch = self._main
        try:
            for ex in topology.exchanges:
                self._rpc(ch, f.EXCHANGE_DECLARE, b"\0\0" + f.shortstr(ex.name) + f.shortstr(
                    ex.kind) + f.bits(False, ex.durable) + f.encode_table({}),
                    f.EXCHANGE_DECLARE_OK)
            for q in topology.queues:
                self._rpc(ch, f.QUEUE_DECLARE, b"\0\0" + f.shortstr(q.name) + f.bits(
                    False, q.durable, q.exclusive, q.auto_delete) + f.encode_table(
                    q.arguments), f.QUEUE_DECLARE_OK)
            for b in topology.bindings:
                self._rpc(ch, f.QUEUE_BIND, b"\0\0" + f.shortstr(b.queue) + f.shortstr(
                    b.exchange) + f.shortstr(b.routing_key) + b"\0" + f.encode_table({}),
                    f.QUEUE_BIND_OK)
        except ChannelClosed as exc:
            error = declare_refusal(exc.code, exc.text)
            if not isinstance(error, QueueArgumentsError):
                raise error from None
            self._reopen_main()
            raise error from None
        except _FAILURES as exc:
            raise self._failed("declare", exc) from None

    def queue_depth(self, queue: str) -> int | None:
        info = self.queue_info(queue)
        return None if info is None else info[0]

    def queue_info(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers), None for a missing queue. A missing queue closes the
        channel and a fresh one is opened, which drops this connection's consumers: use it on
        connections that only inspect."""
        try:
            _, args = self._rpc(self._main, f.QUEUE_DECLARE, b"\0\0" + f.shortstr(queue)
                                + f.bits(True) + f.encode_table({}), f.QUEUE_DECLARE_OK)
        except ChannelClosed:
            self._reopen_main()
            return None
        except _FAILURES as exc:
            raise self._failed("queue depth", exc) from None
        offset = 1 + args[0]
        ready, consumers = struct.unpack_from(">II", args, offset)
        return int(ready), int(consumers)

    def delete_queue(self, queue: str, if_empty: bool = False) -> bool:
        try:  # (flags: if-unused, if-empty, no-wait; see the interface: both or neither)
            self._rpc(self._main, f.QUEUE_DELETE, b"\0\0" + f.shortstr(queue)
                      + f.bits(if_empty, if_empty), f.QUEUE_DELETE_OK)
        except ChannelClosed as exc:
            if not (if_empty and exc.code == PRECONDITION_FAILED):
                raise self._failed(f"delete {queue}", exc) from None
            self._reopen_main()
            return False
        except _FAILURES as exc:
            raise self._failed(f"delete {queue}", exc) from None
        return True
