"""Clients in a child process made by os.fork() (multiprocessing's default on Linux).

A forked child inherits a client's sockets, which stay the parent's connections to the broker
and etcd, but none of its threads. A child that called through them read replies meant for the
parent (both processes' direct calls then timed out), and a child that closed "its" client
(a `with droplet.connect()` block ending, say) closed the parent's broker connection under
it. So in the child every client made before the fork is disowned: it leaves those sockets
alone (close() sends nothing on them) and refuses to be used, saying to connect again there.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from droplet.client.client import DropletClient

FORKED = ("this client was connected in the parent of this process (before os.fork()): "
          "connect again in the child (droplet.connect())")

_clients: weakref.WeakSet[DropletClient] = weakref.WeakSet()


def track(client: DropletClient) -> None:
    """Disowns `client` in any child forked from now on."""
    _clients.add(client)


def _disown_all() -> None:
    for client in list(_clients):
        client.disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_all)
