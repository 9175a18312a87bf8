"""Messages between running functions (lib.send / lib.recv) and calls started from inside a
function (lib.call), over the worker's broker connection.

Each worker has an inbox queue. `send` publishes to the destination's inbox and waits for the
broker's confirm, so a message to an unknown worker fails in the sender. Nobody consumes an
inbox: `recv` takes messages from it (basic.get) only when a function asks, and acks each once
decoded. Until then a message is simply ready in its queue, so a receiver that is busy for
hours, or dies, loses nothing, and no unacked message ever runs into the broker's consumer
timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from droplet.broker.interface import BrokerConnection
from droplet.broker_config.names import QueueNames
from droplet.errors import DropletError, InvalidArgumentError, ValueTooLargeError
from droplet.proto import envelope, pb
from droplet.signing import Signer
from droplet.worker.keeper import ConnectionKeeper

_CONFIRM_TIMEOUT_S = 10.0
_FIRST_PAUSE_S = 0.001
_MAX_PAUSE_S = 0.05
_MAX_TAKEN = 256


class WorkerPort:
    def __init__(
        self,
        worker_id: str,
        names: QueueNames,
        signer: Signer,
        keeper: ConnectionKeeper,
        connection: Callable[[], BrokerConnection | None],
        is_alive: Callable[[str], bool],
        max_bytes: int,
    ) -> None:
        self._worker_id = worker_id
        self._max_bytes = max_bytes  # max_message_bytes: what the broker is set to take
        self._names = names
        self._signer = signer
        self._keeper = keeper
        self._connection = connection
        self._is_alive = is_alive

    def send(self, destination: str, message: pb.UserMessage) -> None:
        if not self._is_alive(destination):
            raise InvalidArgumentError(f"no live worker {destination!r} to send a message to")
        body = envelope.encode([pb.Message(user_message=message)], self._signer)
        self._publish_confirmed(self._names.inbox(destination), body, f"to {destination!r}")

    def start_call(self, call: pb.FunctionCall) -> None:
        body = envelope.encode([pb.Message(call=call)], self._signer)
        self._publish_confirmed(self._names.calls, body, f"of {call.name!r}")

    def receive(self, timeout_s: float) -> list[pb.UserMessage]:
        deadline = time.monotonic() + timeout_s
        pause = _FIRST_PAUSE_S
        while True:
            messages = self._take()
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_PAUSE_S)

    def _take(self) -> list[pb.UserMessage]:
        """Everything waiting in this worker's inbox (up to a bound), acked as it is read."""
        conn = self._need_connection()
        inbox = self._names.inbox(self._worker_id)
        messages: list[pb.UserMessage] = []
        with self._keeper.using():
            while len(messages) < _MAX_TAKEN and (delivery := conn.get(inbox)) is not None:
                try:
                    for message in envelope.decode(delivery.body, self._signer):
                        if message.WhichOneof("kind") == "user_message":
                            messages.append(message.user_message)
                    conn.ack(delivery.tag)
                except DropletError:
                    conn.reject(delivery.tag, requeue=False)  # not ours to read: dead-letter
        return messages

    def _publish_confirmed(self, queue: str, body: bytes, what: str) -> None:
        # Refused here, in the function that sent it: a broker refuses a message over its
        # max_message_size by closing the connection, which would end this worker's session
        # with the call in hand, on every delivery of it.
        if len(body) > self._max_bytes:
            raise ValueTooLargeError(
                f"the message {what} takes {len(body)} bytes, over max_message_bytes "
                f"({self._max_bytes}): store large values with lib.put() and send the key")
        outcome: list[bool] = []
        conn = self._need_connection()
        with self._keeper.using():
            conn.publish(queue, body, mandatory=True, on_confirm=outcome.append)
        deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
        while not outcome and time.monotonic() < deadline:
            with self._keeper.using():
                conn.pump()
            if not outcome:
                time.sleep(0.001)
        if not outcome or not outcome[0]:
            raise DropletError(f"the broker did not take the message {what}")

    def _need_connection(self) -> BrokerConnection:
        conn = self._connection()
        if conn is None:
            raise DropletError("the worker is not connected to the broker right now")
        return conn
