"""How a client's parts (call batcher, router, DAG routes, reply pump, etcd connection) are
closed: by close(), or, for a client dropped without close(), once it is collected. Nothing
the parts hold refers back to the client (its batcher sends through a weak method), so a
client nobody uses any more is collected, and its threads and connections end with it."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from droplet.proto import pb

if TYPE_CHECKING:
    from droplet.client.batcher import CallBatcher
    from droplet.client.dagroutes import DagRoutes
    from droplet.client.pump import ReplyPump
    from droplet.client.routing import CallRouter
    from droplet.store.kv import KV


def weakly(send: Callable[[list[pb.FunctionCall]], None]
           ) -> Callable[[list[pb.FunctionCall]], None]:
    """The client's bound method, without keeping the client alive (the batcher's thread
    holds it); once the client is gone nothing waits for what it would send."""
    method = weakref.WeakMethod(send)

    def weak_send(calls: list[pb.FunctionCall]) -> None:
        bound = method()
        if bound is not None:
            bound(calls)

    return weak_send


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
