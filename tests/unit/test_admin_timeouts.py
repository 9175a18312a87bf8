"""A request no scheduler answered says why it may not have: the client's broker link is down
(the request may never have left), or no scheduler consumes the admin queue."""

from __future__ import annotations

from typing import Any

import pytest

from droplet.broker_config.names import QueueNames
from droplet.client.admin import AdminRequests
from droplet.errors import DropletTimeoutError
from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer


class SilentPump:
    """Takes every request and never answers it."""

    def __init__(self, connected: bool) -> None:
        self._connected = connected
        self.forgotten: list[str] = []

    def send(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def wait(self, key: str, timeout_s: float) -> None:
        return None

    def forget(self, key: str) -> None:
        self.forgotten.append(key)

    def connected(self) -> bool:
        return self._connected


def _admin(pump: SilentPump) -> AdminRequests:
    settings = Settings().with_(request_timeout_s=0.01)
    return AdminRequests(pump, QueueNames.of(settings), Signer(""), settings)  # type: ignore[arg-type]


def test_a_client_without_its_broker_says_so() -> None:
    pump = SilentPump(connected=False)
    with pytest.raises(DropletTimeoutError, match="not connected to RabbitMQ"):
        _admin(pump).response(pb.Message())
    assert len(pump.forgotten) == 1


def test_a_connected_client_points_at_the_scheduler() -> None:
    pump = SilentPump(connected=True)
    with pytest.raises(DropletTimeoutError, match="droplet scheduler") as raised:
        _admin(pump).response(pb.Message())
    assert "RabbitMQ" not in str(raised.value)
