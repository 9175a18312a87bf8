"""Where a client's function calls go.

A plain call (no argument refers to a stored key) goes straight to the shared work queue, where
the first idle worker takes it: two broker hops from the client to its answer, as the raw
floor of a request and a reply. The scheduler would only put it there itself. A call on
stored keys goes through a scheduler, which places it on the worker that caches them; so does
a call that needs resource tags or whose function batches (client/tagging.py).

The router knows how many workers are alive (etcd, read at most once a second), and spreads
what is in flight over them: an envelope carries calls in flight / live workers calls (at most
16). A few calls meet idle workers one or two to an envelope, so slow calls run side by side;
a burst whose calls already keep every worker busy goes in full envelopes, each worth one etcd
write and one ack, instead of many small ones that would cost the fleet as much each. When no
worker is alive a call is answered NO_RESOURCES at once instead of waiting in the queue for a
worker that may never come.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

from droplet.broker_config.names import QueueNames
from droplet.proto import envelope, pb
from droplet.proto.envelope import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_MESSAGES, packed
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV

_RECHECK_S = 1.0
_NONE_FOR_S = 1.0
_MAX_PER_ENVELOPE = 16

Send = Callable[..., None]  # (queue, body, reply ids, priority=...): ReplyPump.send


def _placed(call: pb.FunctionCall) -> bool:
    """Whether a scheduler places the call: it reads stored keys, needs resource tags, or its
    function batches (client/tagging.py)."""
    return bool(call.resources or call.batching
                or serializer.reference_keys(call.arguments.values))


class CallRouter:
    def __init__(self, kv: KV, keys: StoreKeys, names: QueueNames, signer: Signer,
                 send: Send, max_bytes: int = MAX_ENVELOPE_BYTES,
                 in_flight: Callable[[], int] = lambda: 0) -> None:
        self._in_flight = in_flight  # calls sent and not answered yet
        self._max_bytes = max_bytes  # what one message may carry (max_message_bytes)
        self._kv = kv
        self._keys = keys
        self._names = names
        self._signer = signer
        self._send = send
        self._lock = threading.Lock()
        self._workers = 0
        self._checked_at = -math.inf

    def live_workers(self) -> int:
        """Workers alive now; none is believed only after a second of asking again (a worker
        re-registering after an etcd outage is briefly absent)."""
        with self._lock:
            if time.monotonic() - self._checked_at < _RECHECK_S and self._workers:
                return self._workers
        deadline = time.monotonic() + _NONE_FOR_S
        while (count := self._kv.count_prefix(self._keys.workers)) == 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with self._lock:
            self._workers, self._checked_at = count, time.monotonic()
        return count

    def send(self, calls: Sequence[pb.FunctionCall]) -> list[pb.FunctionCall]:
        """Sends calls where they belong; returns those no worker is alive to take."""
        placed: list[pb.FunctionCall] = []
        plain: list[pb.FunctionCall] = []
        for call in calls:
            (placed if _placed(call) else plain).append(call)
        if placed:
            self._publish(self._names.calls, placed)
        if not plain:
            return []
        workers = self.live_workers()
        if workers == 0:
            return plain
        spread = math.ceil((len(plain) + self._in_flight()) / workers)
        size = max(1, min(_MAX_PER_ENVELOPE, spread))
        self._publish(self._names.work, plain, size)
        return []

    def _publish(self, queue: str, calls: Sequence[pb.FunctionCall],
                 most: int = MAX_ENVELOPE_MESSAGES) -> None:
        """Envelopes of calls of one priority each, published with it (urgent ones first)."""
        by_priority: dict[int, list[pb.FunctionCall]] = {}
        for call in calls:
            by_priority.setdefault(call.priority, []).append(call)
        for priority in sorted(by_priority, reverse=True):
            for chunk in packed(by_priority[priority], most, lambda call: call.ByteSize(),
                                self._max_bytes):
                body = envelope.encode((pb.Message(call=c) for c in chunk), self._signer)
                self._send(queue, body, [c.response_key for c in chunk], priority=priority)
