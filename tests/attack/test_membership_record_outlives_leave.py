"""store/membership.py: a status record written while the process leaves the fleet must not
outlive it. The keepalive thread (woken far more often now: publish_soon on every worker
joining or leaving a scheduler's view) and publish() (a worker telling it is busy) read the
lease id after the record: when leave() ran in between (the service stopping: it deletes the
record, revokes the lease and forgets its id), the record was put with no lease at all, and
stayed in etcd for good, a scheduler or worker listed forever after it stopped."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from droplet.errors import StoreError
from droplet.store.membership import Membership
from droplet.store.memory import MemoryKV

pytestmark = pytest.mark.timeout(30)

KEY = "/ns/schedulers/s1"


def _leaving_membership(kv: MemoryKV) -> tuple[Membership, threading.Event, threading.Event]:
    """A membership whose next record is read just as another thread leaves the fleet."""
    leave_now, left = threading.Event(), threading.Event()
    holder: list[Membership] = []

    def record() -> bytes:
        if leave_now.is_set():
            leave_now.clear()
            stopping = threading.Thread(target=holder[0].leave)  # e.g. SchedulerService.stop
            stopping.start()
            stopping.join()
            left.set()
        return b"status"

    membership = Membership(kv, KEY, ttl_s=30, record=record)
    holder.append(membership)
    return membership, leave_now, left


@pytest.mark.parametrize("writer", ["publish_soon", "publish"])
def test_a_record_written_as_the_process_leaves_does_not_stay(writer: str) -> None:
    kv = MemoryKV()
    membership, leave_now, left = _leaving_membership(kv)
    membership.join()
    assert kv.get(KEY) == b"status"
    leave_now.set()
    write: Callable[[], None] = getattr(membership, writer)
    with contextlib.suppress(StoreError):  # refused under the revoked lease: fine
        write()
    assert left.wait(5), "the record was never read again"
    time.sleep(0.2)  # the keepalive's write, if any, lands
    assert kv.get(KEY) is None, "the record outlived leave(): put without a lease"
