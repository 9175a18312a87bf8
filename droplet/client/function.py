"""DropletFunction: a registered function, callable like the Python function it wraps."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from droplet.client.tagging import checked_needs
from droplet.priority import checked_priority
from droplet.resources import merged

if TYPE_CHECKING:
    from droplet.client.client import DropletClient
    from droplet.client.future import DropletFuture


class DropletFunction:
    """Calls through a handle carry its `priority` (register(..., priority=N), or
    with_priority(N) for a copy with another)."""

    def __init__(self, name: str, client: DropletClient, direct_response: bool = False,
                 priority: int = 0, *, resources: Mapping[str, float] | None = None,
                 batching: bool = False) -> None:
        self.name = name
        self._client = client
        self.direct_response = direct_response
        self.priority = checked_priority(priority, client.settings.max_priority)
        # Tags its calls need (register(..., resources=...) or with_resources), and whether
        # its function batches: such calls are placed by a scheduler (client/tagging.py).
        self.resources = dict(resources or {})
        self.batching = batching

    def __repr__(self) -> str:
        return f"DropletFunction({self.name!r})"

    def __call__(self, *args: Any) -> DropletFuture:
        return self._client.submit(self.name, args, direct=self.direct_response,
                                   priority=self.priority, resources=self.resources,
                                   batching=self.batching)

    def direct(self, *args: Any) -> DropletFuture:
        """A call answered without storing its result (client.call_direct)."""
        return self._client.submit(self.name, args, direct=True, priority=self.priority,
                                   resources=self.resources, batching=self.batching)

    def with_priority(self, priority: int) -> DropletFunction:
        """The same function, called with another priority: `f.with_priority(9)(x)`."""
        return DropletFunction(self.name, self._client, self.direct_response, priority,
                               resources=self.resources, batching=self.batching)

    def with_resources(self, resources: Mapping[str, float]) -> DropletFunction:
        """The same function, its calls needing these tags too (the largest value of each
        tag wins): `f.with_resources({"gpu": 1})(x)` runs only on a worker with gpu >= 1."""
        return DropletFunction(self.name, self._client, self.direct_response, self.priority,
                               resources=merged(self.resources, checked_needs(resources)),
                               batching=self.batching)

    def call_later(self, delay_s: float, *args: Any) -> DropletFuture:
        """Runs the call once `delay_s` seconds have passed (waiting in the broker, not in
        this process); its future's get() waits out the delay by default. Cancellable."""
        return self._client.submit_delayed(self.name, args, delay_s=delay_s,
                                           priority=self.priority, resources=self.resources,
                                           batching=self.batching)

    def call_at(self, when: datetime | float, *args: Any) -> DropletFuture:
        """Runs the call at `when` (a datetime, naive ones in local time, or a unix time);
        a time already past runs it now."""
        return self._client.submit_delayed(self.name, args, at=when, priority=self.priority,
                                           resources=self.resources, batching=self.batching)
