"""Attack: a client connected before os.fork(), used and closed in the child.

The child inherits the client's sockets (the parent's broker and etcd connections) and none
of its threads. Calling through them, parent and child read each other's replies: of 200
direct calls each made at the same time, the parent got 1 and the child 6, the rest timed
out. A child that closed the client (the end of a `with droplet.connect()` block in a
multiprocessing worker) closed the parent's broker connection: the parent's next direct call
timed out. Now the child's copy refuses every use with an error that says to connect again,
and its close() leaves the parent's connections alone (client/forks.py).
"""

from __future__ import annotations

import os
import traceback

import droplet


def _in_child(client: droplet.DropletClient, name: str, write: int) -> None:
    """Runs in the child; reports what happened through `write`, then exits at once."""
    report = "ok"
    try:
        for attempt in (lambda: client.call_direct(name, 1).get(timeout=5),
                        lambda: client.get_object("anything"),
                        lambda: client.list()):
            try:
                attempt()
                report = "a call through the parent's client worked in the child"
                break
            except droplet.DropletError as exc:
                if "fork" not in str(exc):
                    report = f"unclear error: {exc!r}"
                    break
        client.close()
        with droplet.connect(settings=client.settings) as own:  # its own client works
            if own.call_direct(name, 1).get(timeout=10) != 2:
                report = "the child's own client answered wrong"
    except BaseException:
        report = traceback.format_exc()
    os.write(write, report.encode())
    os._exit(0)


def test_a_forked_child_neither_uses_nor_closes_its_parents_client(
        client: droplet.DropletClient, unique: str) -> None:
    incr = client.register(lambda lib, x: x + 1, unique)
    assert incr.direct(1).get(timeout=20) == 2
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        _in_child(client, unique, write)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    assert report == "ok", report
    assert [incr.direct(i).get(timeout=5) for i in range(20)] == list(range(1, 21))
