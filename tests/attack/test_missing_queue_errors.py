"""get() and consume() of a queue that does not exist (deleted by the reaper, by an operator)
close the channel at the broker. The lean transport let its internal ChannelClosed escape,
no BrokerError: callers that handle broker failures as DropletError (a function reading its
inbox through the library, the worker loop) met an exception they do not expect, and the
connection stayed "open" with a dead channel. pika raised a BrokerError; now both do."""

from __future__ import annotations

import uuid

import pytest

from droplet.errors import BrokerError
from droplet.settings import Settings
from tests.broker_transports import connect, transports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@transports
@pytest.mark.parametrize("operation", ["get", "consume"])
def test_missing_queue_errors(settings: Settings, transport: str, operation: str) -> None:
    conn = connect(transport, settings, "attack-missing-queue")
    missing = f"attack-missing-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(BrokerError):
            if operation == "get":
                conn.get(missing)
            else:
                conn.consume(missing, prefetch=1)
    finally:
        conn.close()
