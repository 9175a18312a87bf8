"""Watches on an etcd prefix, one stream each (lean or gRPC), that report when they break.

Apart from the request/response operations (store/etcd.py) because a watch is a long-lived
stream on its own thread with its own failure story: the library's own watcher swallows
stream errors, so a watch would die silently across an etcd restart; this one reports them,
and the mirrors and the value cache rely on hearing of every gap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from etcd3 import etcdrpc
from etcd3 import utils as etcd_utils
from etcd3.etcdrpc import kv_pb2

from droplet.errors import StoreError
from droplet.store.etcd_client import fail, fail_over, transient
from droplet.store.etcd_lean import LeanKVClient
from droplet.store.kv import ErrorCallback, WatchCallback, WatchEvent

# grpc's blocking stream iterators wake every 0.1 s (grpc._common.MAXIMUM_WAIT_TIMEOUT) only to
# stay responsive to signals. A watch runs on a daemon thread that cancel() ends, so waking
# once a second is enough: an idle worker's three watch threads then cost a quarter of the CPU
# (0.20% -> 0.05% of a core, measured). A wait with a deadline still ends on time (grpc waits
# for the smaller of the two).
STREAM_WAKE_S = 1.0


def quiet_stream_waits() -> bool:
    """Raises grpc's stream wake-up interval to STREAM_WAKE_S; False when this grpc has no
    such setting (then nothing changes)."""
    common = getattr(grpc, "_common", None)
    current = getattr(common, "MAXIMUM_WAIT_TIMEOUT", None)
    if not isinstance(current, (int, float)):
        return False
    common.MAXIMUM_WAIT_TIMEOUT = max(current, STREAM_WAKE_S)  # type: ignore[union-attr]
    return True


class PrefixWatch(threading.Thread):
    """One gRPC watch stream on a prefix.

    When its member goes away, the member is first taken for failed, so that the owner's new
    watch (a mirror re-reads and watches again from the next revision; the value cache
    empties and starts over) goes to another member. The watch does not resume by itself: a
    gap in a watch is what tells the value cache it cannot be trusted."""

    def __init__(
        self,
        client: Any,
        endpoints: int,
        prefix: str,
        start_revision: int,
        on_events: WatchCallback,
        on_error: ErrorCallback,
    ) -> None:
        super().__init__(daemon=True, name=f"etcd-watch {prefix}")
        quiet_stream_waits()
        self._client = client
        self._endpoints = endpoints
        self._on_events = on_events
        self._on_error = on_error
        self._requests: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        # cancel() and run() agree under it on whether the stream exists: a watch cancelled
        # before run() opened its stream would otherwise find nothing to cancel, and etcd keeps
        # a watch whose client merely stops sending (thread, stream and events live on).
        self._stream_lock = threading.Lock()
        self._stream: Any = None
        key = prefix.encode()
        create = etcdrpc.WatchCreateRequest(
            key=key, range_end=etcd_utils.prefix_range_end(key), prev_kv=True,
            start_revision=start_revision,
        )
        self._create = etcdrpc.WatchRequest(create_request=create)
        self._requests.put(self._create)

    def _request_stream(self) -> Iterator[Any]:
        while (request := self._requests.get()) is not None:
            yield request

    def run(self) -> None:
        member = None
        try:
            client = self._client
            with self._stream_lock:
                if self._cancelled.is_set():
                    return
                if isinstance(client, LeanKVClient):  # no grpcio thread wakes for it
                    self._stream, member = client.open_watch(self._create)
                else:
                    channel = client.channel
                    member = client.endpoint_in_use
                    self._stream = etcdrpc.WatchStub(channel).Watch(
                        self._request_stream(), credentials=client.call_credentials,
                        metadata=client.metadata,
                    )
            for response in self._stream:
                if self._cancelled.is_set():
                    return
                if response.compact_revision:
                    raise StoreError(f"watch start compacted ({response.compact_revision})")
                if response.canceled:
                    raise StoreError(f"watch canceled by etcd: {response.cancel_reason}")
                events = [_event(e) for e in response.events]
                if events:
                    self._on_events(events)
            raise StoreError("watch stream ended")
        except Exception as exc:
            if self._cancelled.is_set():
                return
            if isinstance(exc, grpc.RpcError) and transient(exc):
                fail_over(self._client, self._endpoints, member)
            self._on_error(exc if isinstance(exc, StoreError) else fail("watch", exc))

    def cancel(self) -> None:
        with self._stream_lock:
            self._cancelled.set()
            stream = self._stream
        self._requests.put(None)
        if stream is not None:
            stream.cancel()


def _event(raw: Any) -> WatchEvent:
    deleted = raw.type == kv_pb2.Event.DELETE
    return WatchEvent(
        key=raw.kv.key.decode(),
        value=None if deleted else raw.kv.value,
        revision=int(raw.kv.mod_revision),
        prev_value=raw.prev_kv.value if raw.HasField("prev_kv") else None,
        create_revision=int(raw.kv.create_revision),
        version=int(raw.kv.version),
    )
