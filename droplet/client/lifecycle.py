"""How a client's parts (call batcher, router, DAG routes, reply pump, etcd connection) are
closed: by close(), or, for a client dropped without close(), once it is collected. Nothing
the parts hold refers back to the client (its batcher sends through send_calls, bound to the
parts), so a client nobody uses any more is collected, and its threads and connections end
with it, once what its batcher holds is sent."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from droplet.proto import pb
from droplet.proto.replies import error_response, error_value
from droplet.store.commits import Commit, Committer, Outcome

if TYPE_CHECKING:
    from droplet.client.batcher import CallBatcher
    from droplet.client.dagroutes import DagRoutes
    from droplet.client.pump import ReplyPump
    from droplet.client.routing import CallRouter
    from droplet.store.kv import KV


def send_calls(router: CallRouter, committer: Committer, pump: ReplyPump,
               calls: Sequence[pb.FunctionCall]) -> None:
    """What the client's batcher sends through, bound to the parts only (not the client: the
    batcher's thread would keep it alive). A weak reference to the client would not do
    either: a client collected right after a burst of calls whose futures nobody kept has
    its batcher flushed as it closes, and those calls, sent as far as their caller knows,
    must still go (README: a call once sent runs whatever becomes of its caller)."""
    for call in router.send(calls):
        message = "no worker is alive to run it"
        if not call.direct_response:  # its outcome, stored like any other
            failed = Outcome(call.call_id, error_value(pb.NO_RESOURCES, message),
                             keep=call.keep_result)
            committer.apply(Commit(outcome=failed))
        pump.answer(call.response_key, error_response(
            call.response_key, pb.NO_RESOURCES, message, call_id=call.call_id))


def close_parts(batcher: CallBatcher, router: CallRouter, dag_routes: DagRoutes,
                pump: ReplyPump, kv: KV) -> None:
    batcher.close()
    router.close()
    dag_routes.close()
    pump.close()
    kv.close()


def close_soon(parts: tuple[CallBatcher, CallRouter, DagRoutes, ReplyPump, KV]) -> None:
    """For a client collected unclosed: on a thread of its own, since collection may happen
    on any thread, inside a lock of the parts too."""
    threading.Thread(target=close_parts, args=parts, daemon=True,
                     name="droplet-client-close").start()
