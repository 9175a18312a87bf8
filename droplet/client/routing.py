"""Where a client's function calls go.

A plain call (no argument refers to a stored key) goes straight to the shared work queue, where
the first idle worker takes it: two broker hops from the client to its answer, as the raw
floor of a request and a reply. The scheduler would only put it there itself. A call on
stored keys goes through a scheduler, which places it on the worker that caches them; so does
a call that needs resource tags or whose function batches (client/tagging.py).

The router knows how many workers are alive and how many cores they run on (their status
records in etcd, read again once a second by a thread of its own: a call never waits for that
read, unless none is known alive or it is 2 s old; client/viewkeeper.py), and spreads what is
in flight over the calls the fleet can really run at once: the live workers, but no more than
the cores of their hosts (32 workers sharing 2 cores run 2 calls at a time, not 32). An
envelope carries calls in flight / that parallelism calls (at most 16, or 64 when every call's
function is one a worker lists as quick, none as slow: under 1 ms a run). A few calls meet idle
workers one or two to an envelope; a burst whose calls already keep every core busy goes in
full envelopes, each worth one etcd write and one ack, instead of many small ones that would
cost the crowded machine as much each, and wake as many descheduled processes. Calls of a
function that turns out slow are not held back behind one another by this: a worker hands the
calls of its envelope it has not started back to the shared queue, one to a message, once a run
goes on past 20 ms while another worker is idle (handback.py), so slow calls still run side by
side. When no worker is alive a call is answered NO_RESOURCES at once instead of waiting in the
queue for a worker that may never come.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from google.protobuf.message import DecodeError

from droplet.broker_config.names import QueueNames
from droplet.client.viewkeeper import ViewKeeper
from droplet.proto import envelope, pb
from droplet.proto.envelope import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_MESSAGES, packed
from droplet.signing import Signer
from droplet.store import serializer
from droplet.store.keys import StoreKeys
from droplet.store.kv import KV

_NONE_FOR_S = 1.0
_MAX_PER_ENVELOPE = 16
# Calls of functions the workers find quick (worker/pace.py QUICK_S, 1 ms) go up to this many
# to a message: each message costs a delivery, an etcd transaction, an ack and a reply, and a
# whole envelope of them holds a call of higher priority back by some 64 ms at most.
_QUICK_PER_ENVELOPE = 64
# ...and no more than this many bytes: a delivery whose call goes long is held as a claim in
# etcd (worker/claims.py), and etcd refuses a request over 1.5 MiB. 64 calls with 30 KB
# arguments (1.9 MiB) went over it where 16 of them had fitted: the claim was refused, and
# the delivery stayed exposed to the broker's consumer timeout for the whole long call.
_QUICK_ENVELOPE_BYTES = 1024 * 1024

Send = Callable[..., None]  # (queue, body, reply ids, priority=..., persistent=...): ReplyPump.send


def _placed(call: pb.FunctionCall) -> bool:
    """Whether a scheduler places the call: it reads stored keys, needs resource tags, or its
    function batches (client/tagging.py)."""
    return bool(call.resources or call.batching
                or serializer.reference_keys(call.arguments.values))


def _statuses(records: Iterable[bytes]) -> list[pb.WorkerStatus]:
    """The records read; one unreadable is an empty status."""
    statuses = []
    for raw in records:
        status = pb.WorkerStatus()
        try:
            status.ParseFromString(raw)
        except DecodeError:
            status = pb.WorkerStatus()
        statuses.append(status)
    return statuses


def quick_functions(statuses: Iterable[pb.WorkerStatus]) -> frozenset[str]:
    """The functions some worker of the fleet finds quick (its status record lists them) and
    none that has run them finds slow: an envelope in the shared queue may go to any worker,
    and where a function takes 10 ms, 64 calls of it would run one after another (none
    reaches the keeper's 20 ms mark to have the rest handed back). A worker that has not run
    it (no seat at the queue, say) has no say."""
    quick: set[str] = set()
    slow: set[str] = set()
    for status in statuses:
        quick.update(status.quick_functions)
        slow.update(status.slow_functions)
    return frozenset(quick - slow)


def fleet_parallelism(records: Iterable[bytes]) -> int:
    """Calls the workers of these status records can run at once: on each host, its workers,
    but no more than its cores. A record that does not say its cores (an older worker, or
    one unreadable) counts as a core of its own."""
    return _parallelism(_statuses(records))


def _parallelism(statuses: Iterable[pb.WorkerStatus]) -> int:
    workers: dict[str, int] = {}
    cores: dict[str, int] = {}
    for index, status in enumerate(statuses):
        host = status.host if status.cpus else f"?{index}"  # unknown: alone
        workers[host] = workers.get(host, 0) + 1
        cores[host] = max(cores.get(host, 0), status.cpus or 1)
    return sum(min(count, cores[host]) for host, count in workers.items())


class CallRouter:
    def __init__(self, kv: KV, keys: StoreKeys, names: QueueNames, signer: Signer,
                 send: Send, max_bytes: int = MAX_ENVELOPE_BYTES,
                 in_flight: Callable[[], int] = lambda: 0, transient_direct: bool = True) -> None:
        self._in_flight = in_flight  # calls sent and not answered yet
        # Whether direct calls' requests go transient: not on a RabbitMQ cluster, where the
        # node of a classic queue may restart while the client's own node stays up, so that
        # the client never reconnects and never sends a dropped request again
        # (tests/attack/test_direct_request_on_a_restarted_queue_node.py); nor under quorum
        # queues, which keep every message on disk anyway and confirm only a persistent one,
        # so only its refusal is seen and sent again
        # (tests/attack/test_quorum_direct_request_refused.py). The one place that decides.
        self._transient_direct = transient_direct
        self._max_bytes = max_bytes  # what one message may carry (max_message_bytes)
        self._kv = kv
        self._keys = keys
        self._names = names
        self._signer = signer
        self._send = send
        self._lock = threading.Lock()
        self._workers = 0
        self._parallel = 0
        self._quick: frozenset[str] = frozenset()
        # (a look due is the keeper's thread's: a call goes on with what the last one found)
        self.view = ViewKeeper(lambda: self._look(patient=False), "droplet-fleet-view")

    def close(self) -> None:
        self.view.close()

    def live_workers(self) -> int:
        """Workers alive now; none is believed only after a second of asking again (a worker
        re-registering after an etcd outage is briefly absent)."""
        return self._fleet()[0]

    def parallelism(self) -> int:
        """How many calls the live workers can run at once: one each, but no more than the
        cores of the hosts they share (0 when none is alive)."""
        return self._fleet()[1]

    def known_quick(self) -> frozenset[str]:
        """The functions some live worker lists as quick and none as slow (read at most
        once a second)."""
        self._fleet()
        return self._quick

    def saturated(self) -> bool:
        """Whether the calls in flight already keep every worker busy, as far as the last look
        at the fleet knows (never asks etcd: the batcher asks at every call)."""
        parallel = self._parallel
        return parallel > 0 and self._in_flight() >= parallel

    def _fleet(self) -> tuple[int, int]:
        with self._lock:
            workers, parallel = self._workers, self._parallel
        if workers and self.view.usable():
            return workers, parallel
        return self._look()

    def _look(self, patient: bool = True) -> tuple[int, int]:
        """Reads the workers' records: how many are alive and what they can run at once. When
        none is, a patient look asks again for a second before believing it; the refresher's
        look records none at once, so that the next call makes that patient look itself (and
        is answered NO_RESOURCES after it, as before) instead of going to the queue."""
        deadline = time.monotonic() + (_NONE_FOR_S if patient else 0.0)
        while not (records := self._kv.get_prefix(self._keys.workers)[0]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        statuses = _statuses(records.values())
        workers, parallel = len(records), _parallelism(statuses)
        quick = quick_functions(statuses)
        with self._lock:
            self._workers, self._parallel, self._quick = workers, parallel, quick
        self.view.looked()
        return workers, parallel

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
        parallel = self.parallelism()
        if parallel == 0:
            return plain
        spread = math.ceil((len(plain) + self._in_flight()) / parallel)
        quick = self._quick
        big = bool(quick) and all(call.name in quick for call in plain)
        most = _QUICK_PER_ENVELOPE if big else _MAX_PER_ENVELOPE
        size = max(1, min(most, spread))
        if big and size > _MAX_PER_ENVELOPE:
            self._publish(self._names.work, plain, size,
                          min(self._max_bytes, _QUICK_ENVELOPE_BYTES))
        else:
            self._publish(self._names.work, plain, size)
        return []

    def _publish(self, queue: str, calls: Sequence[pb.FunctionCall],
                 most: int = MAX_ENVELOPE_MESSAGES, max_bytes: int | None = None) -> None:
        """Envelopes of calls of one priority each, published with it (urgent ones first).
        Direct-response calls travel apart, as transient messages: their outcome is not kept
        anyway, and a persistent message cost RabbitMQ work on its disk store (in bursts of
        0.5-1 ms of a dirty scheduler every ~0.1 s under sequential calls, which were most of
        the direct calls' slowest hundredth). A restart of RabbitMQ drops one waiting in the
        queue; its client sends it again once reconnected (client/pump.py)."""
        groups: dict[tuple[int, bool], list[pb.FunctionCall]] = {}
        for call in calls:
            groups.setdefault((call.priority, call.direct_response), []).append(call)
        for priority, direct in sorted(groups, reverse=True):
            for chunk in packed(groups[(priority, direct)], most, lambda call: call.ByteSize(),
                                max_bytes or self._max_bytes):
                body = envelope.encode((pb.Message(call=c) for c in chunk), self._signer)
                self._send(queue, body, [c.response_key for c in chunk], priority=priority,
                           persistent=not (direct and self._transient_direct))
