"""A watch cancelled before its thread opened the gRPC stream (store/etcd_watch.py): cancel()
found no stream to cancel, only ended the request iterator, and etcd keeps a watch whose
client stops sending: the thread, its stream and the etcd watch lived on until the client
closed, and the cancelled watch went on delivering events to its callback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from droplet.store.kv import WatchEvent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]


@pytest.fixture
def kv(settings: Settings) -> Iterator[EtcdKV]:
    client = EtcdKV(settings)
    try:
        yield client
    finally:
        client.delete(settings.namespace, prefix=True)
        client.close()


def _watch_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"etcd-watch {prefix}")]


def test_a_watch_cancelled_at_once_ends_and_delivers_nothing(kv: EtcdKV, settings: Settings
                                                             ) -> None:
    prefix = f"/{settings.namespace}/w"
    kv.put(f"/{settings.namespace}/warm", b"1")
    delivered: list[WatchEvent] = []
    for i in range(10):
        kv.watch_prefix(f"{prefix}{i}/", delivered.extend, lambda exc: None)()
    deadline = time.monotonic() + 3
    while _watch_threads(prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = len(_watch_threads(prefix))
    for i in range(10):
        kv.put(f"{prefix}{i}/k", b"v")
    time.sleep(0.5)
    assert left == 0, f"{left} of 10 cancelled watches still running 3 s later"
    assert delivered == [], "a cancelled watch delivered events"
