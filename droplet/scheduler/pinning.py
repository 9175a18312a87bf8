"""The scheduler's side of the pin protocol over the broker (the `PinPort` of dags.py).

A pin request is an RPC on the worker's own queue, answered on this connection's direct-reply
address. No answer within `pin_timeout_s` counts as a rejection; a late answer is ignored, and
the worker itself re-checks the pin record in etcd before accepting, so a pin the scheduler gave
up on never takes hold.
"""

from __future__ import annotations

import time
import uuid

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.broker_config.names import QueueNames
from droplet.proto import envelope, pb
from droplet.settings import Settings
from droplet.signing import Signer


class BrokerPins:
    def __init__(
        self,
        conn: BrokerConnection,
        names: QueueNames,
        signer: Signer,
        reply_address: str,
        settings: Settings,
    ) -> None:
        self._conn = conn
        self._names = names
        self._signer = signer
        self._reply_address = reply_address
        self._timeout_s = settings.pin_timeout_s
        self._stashed: list[Delivery] = []

    def take_stashed(self) -> list[Delivery]:
        """Deliveries that arrived while waiting for a pin answer, for the admin loop."""
        out, self._stashed = self._stashed, []
        return out

    def pin(self, worker_id: str, dag_name: str, function_name: str) -> bool:
        request = pb.Message(pin=pb.PinRequest(dag_name=dag_name, function_name=function_name))
        correlation_id = uuid.uuid4().hex
        unroutable: list[bool] = []
        self._conn.publish(
            self._names.worker(worker_id),
            envelope.encode([request], self._signer),
            reply_to=self._reply_address,
            correlation_id=correlation_id,
            persistent=False,
            mandatory=True,
            on_confirm=lambda ok: unroutable.append(not ok),
        )
        deadline = time.monotonic() + self._timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            for delivery in self._conn.poll(min(remaining, 0.2)):
                if delivery.correlation_id == correlation_id:
                    return self._accepted(delivery)
                if delivery.queue == self._names.admin:
                    self._stashed.append(delivery)
            if any(unroutable):
                return False  # the worker's queue is gone: the worker is too
        return False

    def _accepted(self, delivery: Delivery) -> bool:
        try:
            messages = envelope.decode(delivery.body, self._signer)
        except Exception:
            return False
        return any(
            m.WhichOneof("kind") == "response" and m.response.success
            and m.response.call_id == delivery.correlation_id for m in messages
        )

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            for delivery in self._conn.poll(min(remaining, 0.1)):
                if delivery.queue == self._names.admin:
                    self._stashed.append(delivery)

    def unpin(self, worker_id: str, dag_name: str, function_name: str) -> None:
        request = pb.UnpinRequest(dag_name=dag_name, function_name=function_name)
        self._conn.publish(
            self._names.worker(worker_id),
            envelope.encode([pb.Message(unpin=request)], self._signer),
        )
