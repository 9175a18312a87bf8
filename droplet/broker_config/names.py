"""Every queue name and routing key Droplet uses, built in one place.

All messages go through RabbitMQ's default exchange, routed by queue name; dead letters use
it too (x-dead-letter-exchange ""), so there is no exchange to declare or bind. Names carry
the namespace, so several clusters, or several test runs, can share one broker.

    <ns>.scheduler.calls   FunctionCall, DagCall           shared by all schedulers
    <ns>.scheduler.admin   Function, Dag, DeleteDag (RPC)  shared by all schedulers
    <ns>.work              FunctionCall placed on no particular worker: every worker
                           consumes it with prefetch 1, so an idle worker takes it first
    <ns>.worker.<id>       one worker's own queue: DagSchedule, DagTrigger, Pin, Unpin,
                           UserMessage, and calls placed on it for data locality
    <ns>.inbox.<id>        messages to functions on one worker (lib.send / lib.recv)
    <ns>.dead              dead letters: undecodable, unsigned or handler-crashing messages
    <ns>.retry.<N>ms       calls waiting out a retry back-off, or a delay (call_later) in
                           power-of-two steps; on expiry they go back to <ns>.scheduler.calls

The call, work and worker queues are priority queues (x-max-priority = max_priority): a
message's AMQP priority orders it ahead of lower ones waiting there (see droplet/priority.py).
With queue_type "quorum" every durable queue is a quorum queue instead, which RabbitMQ 3.x
gives no priorities (broker_config/topology.py).
"""

from __future__ import annotations

import re
import uuid

from droplet.settings import Settings

# \Z, not $: "$" also matches before a trailing newline ("f\n" would pass).
_VALID = re.compile(r"\A[A-Za-z0-9_.:-]{1,200}\Z")
# Reply addresses: RabbitMQ's direct reply-to pseudo-queues (and the stub broker's). An answer
# to a message that failed verification goes only to such an address, never to a real queue.
REPLY_PREFIXES = ("amq.rabbitmq.reply-to", "stub.reply.", "droplet.reply.")
# On a RabbitMQ cluster, replies go to an exclusive queue of the receiving connection
# instead: RabbitMQ 3.10 closes the connection of whoever publishes to (or even looks up) a
# direct reply-to address whose node is down, so one in-flight message carrying such an
# address would cut its worker's connection on every redelivery. A reply to a queue that is
# gone is simply dropped (the caller re-sent its request from its new connection).
REPLY_QUEUE_PREFIX = "droplet.reply."
# Header of a message sent again (a client's re-send after a reconnect, a dead worker's queue
# moved, a long call's claim settled): it may have run already, so its outcome is looked up.
RESENT_HEADER = "x-droplet-resent"
# Header of an envelope with calls (or DAG steps) of a batching function: its worker gathers
# a batch even before its functions mirror has told it that the function batches.
BATCHING_HEADER = "x-droplet-batching"
# Headers of a message dead-lettered by Droplet itself (one message of an envelope).
DEAD_FROM_HEADER = "x-droplet-from"
DEAD_REASON_HEADER = "x-droplet-reason"


def is_reply_address(address: str | None) -> bool:
    return bool(address) and str(address).startswith(REPLY_PREFIXES)


def private_reply_queue() -> str:
    """A fresh name for one connection's exclusive reply queue (see REPLY_QUEUE_PREFIX)."""
    return REPLY_QUEUE_PREFIX + uuid.uuid4().hex


MAX_QUEUE_NAME_BYTES = 255  # AMQP's short strings: no queue can have a longer name


def can_be_queue(name: str) -> bool:
    """Whether a queue could have this name. Those made of what etcd records or a message
    header says (a worker id, where a letter died) may be anything: asking RabbitMQ about a
    longer one raises ValueError before anything is sent, which stopped the operator's tools."""
    return len(name.encode()) <= MAX_QUEUE_NAME_BYTES


def check_name(kind: str, name: str) -> str:
    """Names become queue names and etcd keys: keep them to a safe alphabet."""
    if not isinstance(name, str) or not _VALID.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be 1-200 characters of letters, digits and _ . : -"
        )
    return name


def retry_bucket_ms(delay_ms: int) -> int:
    bucket = 1
    while bucket < min(max(delay_ms, 1), 24 * 3600 * 1000):
        bucket *= 2
    return bucket


def delay_bucket_ms(remaining_ms: int) -> int:
    """The longest power-of-two wait not past a delayed call's due time: a delay of any
    length is a chain of at most ~27 such waits (1 day < 2^27 ms), each in a queue of its own."""
    bucket = 1
    while bucket * 2 <= min(remaining_ms, 24 * 3600 * 1000):
        bucket *= 2
    return bucket


class QueueNames:
    def __init__(self, namespace: str, max_priority: int = 9, quorum: bool = False) -> None:
        check_name("namespace", namespace)
        self.namespace = namespace
        # x-max-priority of the call, work and worker queues (0: no priorities), and whether
        # durable queues are quorum queues. Every process that declares them must agree:
        # RabbitMQ refuses a queue declared differently.
        self.max_priority = max_priority
        self.quorum = quorum
        self.calls = f"{namespace}.scheduler.calls"
        self.admin = f"{namespace}.scheduler.admin"
        self.work = f"{namespace}.work"
        self.dead = f"{namespace}.dead"
        self.worker_prefix = f"{namespace}.worker."
        self.retry_prefix = f"{namespace}.retry."

    @classmethod
    def of(cls, settings: Settings) -> QueueNames:
        """The names and queue arguments a process with these settings declares."""
        return cls(settings.namespace, settings.max_priority, settings.quorum_queues)

    def retry(self, delay_ms: int) -> str:
        """A queue where calls wait out a retry delay, then return to the scheduler; delays
        are rounded up to a power of two milliseconds, so only a few such queues exist."""
        return f"{self.namespace}.retry.{retry_bucket_ms(delay_ms)}ms"

    def retry_delay_ms(self, queue: str) -> int | None:
        prefix = self.retry_prefix
        if queue.startswith(prefix) and queue.endswith("ms"):
            return int(queue[len(prefix):-2])
        return None

    def worker(self, worker_id: str) -> str:
        return self.worker_prefix + worker_id

    def is_worker_queue(self, queue: str) -> bool:
        return queue.startswith(self.worker_prefix)

    def inbox(self, worker_id: str) -> str:
        return f"{self.namespace}.inbox.{worker_id}"
