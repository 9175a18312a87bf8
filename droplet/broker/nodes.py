"""Which RabbitMQ node a process tries first, when broker_url names several of one cluster.

A process connects to the nodes in the order given; once connected it remembers the node,
and its next connection (a reconnect after that node died or restarted) starts at the node
after it, so it does not wait on a dead node first. Every node of a cluster serves every
queue (quorum queues are replicated; others are reached through the node holding them), so
any node will do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

# A node that failed a connection is tried after the others for this long.
FAILED_LAST_S = 30.0


class NodeOrder:
    """The rotation of one connection factory's broker URLs (thread-safe)."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("no broker URL")
        self.urls = tuple(urls)
        self._lock = threading.Lock()
        self._next = 0
        self._failed_at: dict[int, float] = {}

    def attempt_order(self) -> list[int]:
        """Indexes of the URLs to try, in order, for a new connection: the rotation, with the
        nodes that failed in the last FAILED_LAST_S last (a node that takes connections and
        never answers costs the handshake timeout at every attempt: 5 s per read with the lean
        transport, pika's 15 s)."""
        with self._lock:
            start = self._next
            now = time.monotonic()
            failed = {i for i, at in self._failed_at.items() if now - at < FAILED_LAST_S}
        order = [(start + i) % len(self.urls) for i in range(len(self.urls))]
        return sorted(order, key=lambda index: index in failed)

    def connected(self, index: int) -> None:
        """Records a connection to urls[index]: the next connection starts after it (the
        first connection after a working one is a reconnect, most likely because that node
        went away)."""
        with self._lock:
            self._next = (index + 1) % len(self.urls)
            self._failed_at.pop(index, None)

    def failed(self, index: int) -> None:
        """Records that urls[index] refused or did not answer a connection just now."""
        with self._lock:
            self._failed_at[index] = time.monotonic()
