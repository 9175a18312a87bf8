"""The client's requests that the broker refused (a nack), to be sent again a while later.

Under quorum queues the client's connection has confirms, and a publish to a queue that has no
leader for a moment is refused. Such a request is not sent again at once: while a quorum queue
elects a leader every publish is refused, and re-sending on each refusal would loop as fast as
the broker answers. A connection that refuses everything for long is given up (pump.py then
connects again, and sends everything in flight).
"""

from __future__ import annotations

import logging
import time

from droplet.errors import BrokerError

log = logging.getLogger(__name__)

_RESEND_AFTER_S = 1.0  # a request the broker refused is sent again this much later
_RECONNECT_AFTER_S = 5.0  # refused this long without a single acceptance: a new connection


class RefusedRequests:
    def __init__(self) -> None:
        self._at: dict[str, float] = {}  # first id of a refused request -> when
        self._since: float | None = None  # every confirm since then was a nack

    def accepted(self) -> None:
        self._since = None

    def refused(self, first: str) -> None:
        now = time.monotonic()
        self._at.setdefault(first, now)
        self._since = self._since or now

    def clear(self) -> None:
        """A new connection: every request in flight is sent again on it."""
        self._at.clear()
        self._since = None

    def due(self) -> list[str]:
        """The first ids of the refused requests whose back-off is over, forgotten here;
        BrokerError when the connection has refused everything for too long."""
        if not self._at:
            return []
        now = time.monotonic()
        if self._since and now - self._since > _RECONNECT_AFTER_S:
            # Seen with RabbitMQ 3.10 after a node died: a channel that keeps refusing every
            # publish to a quorum queue whose new leader serves other channels. A new
            # connection (on the next node) re-sends everything in flight.
            raise BrokerError(f"the broker refused every request for {_RECONNECT_AFTER_S:g}s")
        due = [first for first, at in self._at.items() if now - at >= _RESEND_AFTER_S]
        if due:
            log.warning("the broker refused %d requests (nack); sending them again", len(due))
        for first in due:
            del self._at[first]
        return due
