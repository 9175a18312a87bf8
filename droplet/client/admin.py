"""The client's requests to a scheduler: registering functions, creating and deleting DAGs.

Each goes to the admin queue, and any scheduler answers it. The correlation id doubles as the
request id (the envelope's nonce): a redelivered (or replayed) request gets the first answer,
so a registration is never done twice.
"""

from __future__ import annotations

import uuid

from droplet.broker_config.names import QueueNames
from droplet.client.pump import ReplyPump
from droplet.errors import DropletTimeoutError, error_from_info
from droplet.proto import envelope, pb
from droplet.settings import Settings
from droplet.signing import Signer


class AdminRequests:
    def __init__(self, pump: ReplyPump, names: QueueNames, signer: Signer,
                 settings: Settings) -> None:
        self.pump = pump
        self.names = names
        self.signer = signer
        self.settings = settings  # request_timeout_s: how long to wait for a scheduler

    def checked(self, message: pb.Message) -> pb.GenericResponse:
        """Sends a request to a scheduler; raises its error as a RequestError."""
        response = self.response(message)
        if not response.success:
            info = pb.ErrorInfo(code=response.error, message=response.message)
            raise error_from_info(info)
        return response

    def result(self, message: pb.Message) -> tuple[bool, int | None]:
        """(True, None), or (False, the error code the scheduler answered)."""
        response = self.response(message)
        return (True, None) if response.success else (False, response.error)

    def response(self, message: pb.Message) -> pb.GenericResponse:
        correlation_id = uuid.uuid4().hex
        # The request id: a redelivered (or replayed) request gets the first answer.
        body = envelope.encode([message], self.signer, nonce=correlation_id)
        self.pump.send(self.names.admin, body, [correlation_id], correlation_id=correlation_id)
        timeout = self.settings.request_timeout_s
        response = self.pump.wait(correlation_id, timeout)
        if response is None:
            self.pump.forget(correlation_id)
            if not self.pump.connected():  # the request may never have left this client
                raise DropletTimeoutError(
                    f"no scheduler answered within {timeout:g}s: this client is not connected "
                    "to RabbitMQ (is it running? check broker_url / DROPLET_BROKER_URL)")
            raise DropletTimeoutError(
                f"no scheduler answered within {timeout:g}s: is `droplet scheduler` running?"
            )
        return response
