"""DropletFunction: a registered function, callable like the Python function it wraps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from droplet.client.client import DropletClient
    from droplet.client.future import DropletFuture


class DropletFunction:
    def __init__(self, name: str, client: DropletClient, direct_response: bool = False) -> None:
        self.name = name
        self._client = client
        self.direct_response = direct_response

    def __repr__(self) -> str:
        return f"DropletFunction({self.name!r})"

    def __call__(self, *args: Any) -> DropletFuture:
        return self._client.submit(self.name, args, direct=self.direct_response)

    def direct(self, *args: Any) -> DropletFuture:
        """A call answered without storing its result (client.call_direct)."""
        return self._client.submit(self.name, args, direct=True)
