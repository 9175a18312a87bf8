"""Which handler a worker's message goes to: the one place a decoded message meets its
handler, so the loop in service.py stays about deliveries and the handlers stay plain
functions of (message, state, outbox).

Runs of user code (a call, a DAG step) happen inside `keeper.running()`, so the keeper
thread serves the connection, enforces time limits and notices long calls while they go on;
the rest (schedules, pins) is bookkeeping that never runs user code.
"""

from __future__ import annotations

from collections.abc import Callable

from droplet.broker.interface import Delivery
from droplet.broker_config.names import is_reply_address
from droplet.errors import DropletError
from droplet.outbox import Outbox
from droplet.proto import pb
from droplet.worker import dags, direct, handlers
from droplet.worker.gatherer import maybe_run
from droplet.worker.keeper import ConnectionKeeper


def dispatch(message: pb.Message, delivery: Delivery, state: handlers.WorkerState,
             out: Outbox, keeper: ConnectionKeeper, pin_changed: Callable[[], None]) -> None:
    """Hands one message to its handler; `pin_changed` runs when this worker's pin did."""
    kind = message.WhichOneof("kind")
    if kind == "call":
        maybe_done = maybe_run(delivery)
        if not message.call.response_address and is_reply_address(delivery.reply_to):
            message.call.response_address = delivery.reply_to or ""  # sent directly
        with keeper.running():
            handlers.exec_function(message.call, state, out, maybe_done)
    elif kind == "trigger":
        if not direct.pinned_here(message.trigger, delivery.reply_to, state, out):
            return  # a client's trigger for a pin that moved: sent to the schedulers
        with keeper.running():
            dags.on_trigger(message.trigger, state, out)
    elif kind == "schedule":
        dags.on_schedule(message.schedule, state, out)
    elif kind == "pin":
        if handlers.pin(message.pin, delivery.reply_to, delivery.correlation_id, state, out):
            pin_changed()
    elif kind == "unpin":
        if handlers.unpin(message.unpin, state):
            pin_changed()
    else:
        raise DropletError(f"unexpected {kind} message on a worker queue")
