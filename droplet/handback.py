"""Handing back the calls of an envelope that a slow run would hold up.

A client sizes envelopes by the calls the fleet can run at once (client/routing.py): on a
crowded host, 16 calls to a message. When one of them turns out slow (it has run 20 ms and its
function is not known to be quick), the calls behind it in the same envelope would wait for it
while other workers sit idle. The worker then publishes each call it has not started to
the shared queue again, one to a message, so that idle workers take them and slow calls still
run side by side. The original delivery is acked only once these publishes are confirmed (and
its own calls are done): a worker killed in between has it redelivered whole, and a call that
then runs twice finds its outcome already stored (outcomes are written once).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

from droplet.broker.interface import BrokerConnection, Delivery
from droplet.broker_config.names import RESENT_HEADER, QueueNames, is_reply_address
from droplet.errors import DropletError
from droplet.priority import message_priority
from droplet.proto import envelope, pb
from droplet.signing import Signer

log = logging.getLogger(__name__)

Expect = Callable[[], Callable[[bool], None]]  # AckGate.expect: holds the ack until confirmed


def hand_back_rest(conn: BrokerConnection, signer: Signer, names: QueueNames,
                   delivery: Delivery, rest: deque[pb.Message], expect: Expect,
                   waiting: Callable[[], bool] = lambda: False) -> None:
    """Takes the calls not started from `rest` (the cycle's own list: it then skips them) and
    hands them back, when they are plain calls from the shared queue and another worker is
    idle (`waiting`: one waits for a seat at the queue, worker/seats.py)."""
    if not may_hand_back(delivery, names, rest) or not others_idle(conn, names, waiting):
        return
    taken = []
    while True:
        try:
            taken.append(rest.popleft())  # the main thread may take the next one meanwhile
        except IndexError:
            break
    if taken:
        log.info("a run goes on long: %d calls of its delivery go back to the shared queue",
                 len(taken))
        hand_back(conn, signer, names, delivery, taken, expect)


def others_idle(conn: BrokerConnection, names: QueueNames,
                waiting: Callable[[], bool] = lambda: False) -> bool:
    """Whether another worker may take a call at once: nothing waits in the shared queue
    (with prefetch 1, calls wait there only while every consumer is busy), and it has a
    consumer besides this worker, or a worker waits for this worker's seat. Otherwise handing
    calls back would only send them to the back of the queue, behind calls sent after them."""
    try:
        info = conn.queue_info(names.work)
    except DropletError:
        return False
    if info is None or info[0] != 0:
        return False
    mine = 1 if conn.consuming(names.work) else 0
    return info[1] - mine > 0 or waiting()


def may_hand_back(delivery: Delivery, names: QueueNames, rest: Sequence[pb.Message]) -> bool:
    """Only plain calls from the shared queue go back there (anything else has its place)."""
    return (delivery.queue == names.work and bool(rest)
            and all(m.WhichOneof("kind") == "call" for m in rest))


def hand_back(conn: BrokerConnection, signer: Signer, names: QueueNames, delivery: Delivery,
              calls: Sequence[pb.Message], expect: Expect) -> None:
    """Publishes each call to the shared queue on its own; `expect` holds the delivery's ack
    until each is confirmed."""
    maybe_run = delivery.redelivered or bool((delivery.headers or {}).get(RESENT_HEADER))
    headers = {RESENT_HEADER: 1} if maybe_run else None
    for message in calls:
        call = message.call
        if not call.response_address and is_reply_address(delivery.reply_to):
            call.response_address = delivery.reply_to or ""  # it was sent directly
        conn.publish(names.work, envelope.encode([message], signer), persistent=True,
                     mandatory=True, headers=headers, on_confirm=expect(),
                     priority=message_priority(message))
