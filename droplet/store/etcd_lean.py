"""etcd's KV methods (Range, Put, DeleteRange, Txn, Compact), its lease methods and its
watches over store/http2.py connections.

`LeanKV` stands where the etcd3 library keeps its gRPC KV and lease stubs (`client.kvstub`,
`client.leasestub`), so the library's own reads, writes and leases and our transactions
(store/etcd_txn.py) all take the lean path, and a failure leaves as a `grpc.RpcError` with the
code grpcio would give it: the library's fail-over and our retries (store/etcd_client.py)
treat both paths alike. A watch gets a connection of its own (`open_watch`,
store/http2_stream.py). Only authentication stays on gRPC: it happens once per token. With
nothing left on grpcio's streams, an idle process's grpcio threads sleep.

Each call takes an idle connection of the pool, or opens one, so threads never share one; a
connection not used in the last moments is checked for what the peer sent meanwhile (a GOAWAY,
a closed socket, pings) before it carries a request, and a failed one is dropped.
"""

from __future__ import annotations

import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import etcd3
import grpc
from etcd3 import etcdrpc

from droplet.store.http2 import CallFailure, Http2Connection, header_block
from droplet.store.http2_stream import Http2Stream

_CHECK_IDLE_S = 0.05  # a connection idle longer is looked at before it is used again


class RpcFailure(grpc.RpcError):  # type: ignore[misc]
    """A failed lean call, read like grpcio's errors (code(), details())."""

    def __init__(self, status: str, details: str) -> None:
        super().__init__(f"{status}: {details}")
        self._code = getattr(grpc.StatusCode, status, grpc.StatusCode.UNKNOWN)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class LeanWatch:
    """A lean watch, read as grpcio's stream is: iterated for WatchResponses, cancel()led.

    Its connection is made and its request sent by the reader, on its first step, so that
    cancel() never waits for an open (a member that accepts and then answers nothing held a
    cancel for the open's whole timeout) and can end one in progress: a stream cancelled
    before it is connected is never opened, one cancelled while it greets wakes and closes."""

    def __init__(self, connect: Callable[[], Http2Stream], head: bytes, message: bytes,
                 timeout_s: float) -> None:
        self._connect = connect
        self._head, self._message, self._timeout_s = head, message, timeout_s
        self._lock = threading.Lock()
        self._cancelled = False
        self._stream: Http2Stream | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            stream = self._connect()
            with self._lock:
                self._stream = stream
                cancelled = self._cancelled
            if cancelled:
                stream.close()
                raise CallFailure("CANCELLED", "the watch was cancelled")
            stream.open(self._head, self._message, self._timeout_s)
            for message in stream.messages():
                yield etcdrpc.WatchResponse.FromString(message)
        except CallFailure as exc:
            if self._cancelled:  # as grpcio's stream ends when cancelled
                raise RpcFailure("CANCELLED", "the watch was cancelled") from None
            raise RpcFailure(exc.status, exc.details) from None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            stream = self._stream
        if stream is not None:
            stream.cancel()


class LeanKV:
    """The KV and lease stub of one etcd member (host:port), its methods called as grpcio's
    are: (request, timeout, credentials=..., metadata=...)."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._authority = f"{host}:{port}"
        self._idle: list[Http2Connection] = []
        self._heads: dict[tuple[str, Any], bytes] = {}
        self._closed = False
        self.Range = self._method("Range", etcdrpc.RangeResponse)
        self.Put = self._method("Put", etcdrpc.PutResponse)
        self.DeleteRange = self._method("DeleteRange", etcdrpc.DeleteRangeResponse)
        self.Txn = self._method("Txn", etcdrpc.TxnResponse)
        self.Compact = self._method("Compact", etcdrpc.CompactionResponse)
        self.LeaseGrant = self._method("LeaseGrant", etcdrpc.LeaseGrantResponse, "Lease")
        self.LeaseRevoke = self._method("LeaseRevoke", etcdrpc.LeaseRevokeResponse, "Lease")
        self.LeaseTimeToLive = self._method("LeaseTimeToLive",
                                            etcdrpc.LeaseTimeToLiveResponse, "Lease")
        self._keep_alive_once = self._method("LeaseKeepAlive",
                                             etcdrpc.LeaseKeepAliveResponse, "Lease")

    def LeaseKeepAlive(self, requests: Iterable[Any], timeout: float | None = None,
                       credentials: Any = None,
                       metadata: Sequence[tuple[str, str]] | None = None) -> list[Any]:
        """A refresh per request, each a stream of its own that ends after its one answer
        (etcd answers a keep-alive before it reads the end of the stream)."""
        return [self._keep_alive_once(request, timeout, credentials, metadata)
                for request in requests]

    def open_watch(self, request: Any, metadata: Sequence[tuple[str, str]] | None = None,
                   timeout_s: float = 5.0) -> LeanWatch:
        """A watch stream on a connection of its own, connected and its create request sent
        when it is first read (a failure to open is then the reader's RpcFailure)."""
        head = self._head("/etcdserverpb.Watch/Watch", tuple(metadata or ()))
        return LeanWatch(lambda: Http2Stream(self._host, self._port, timeout_s, self._tls),
                         head, request.SerializeToString(), timeout_s)

    def _method(self, name: str, answer: Any, service: str = "KV") -> Callable[..., Any]:
        path = f"/etcdserverpb.{service}/{name}"

        def call(request: Any, timeout: float | None = None, credentials: Any = None,
                 metadata: Sequence[tuple[str, str]] | None = None,
                 meanwhile: Callable[[], None] | None = None) -> Any:
            del credentials  # the token also travels as metadata (etcd_client._authenticate)
            head = self._head(path, tuple(metadata or ()))
            return answer.FromString(self._call(head, request.SerializeToString(),
                                                timeout or 5.0, meanwhile))

        return call

    def _head(self, path: str, metadata: tuple[tuple[str, str], ...]) -> bytes:
        head = self._heads.get((path, metadata))
        if head is None:
            scheme = "https" if self._tls is not None else "http"
            head = self._heads[(path, metadata)] = header_block(
                [(":method", "POST"), (":scheme", scheme), (":path", path),
                 (":authority", self._authority), ("content-type", "application/grpc"),
                 ("te", "trailers"), *metadata])
        return head

    def _call(self, head: bytes, body: bytes, timeout_s: float,
              meanwhile: Callable[[], None] | None = None) -> bytes:
        connection = self._take(timeout_s)
        try:
            answer = connection.call(head, body, timeout_s, meanwhile)
        except CallFailure as exc:
            raise RpcFailure(exc.status, exc.details) from None
        if connection.broken or self._closed:
            connection.close()
        else:
            self._idle.append(connection)
            if self._closed:  # close() ran meanwhile and may have missed it
                self.close()
        return answer

    def _take(self, timeout_s: float) -> Http2Connection:
        while True:
            try:
                connection = self._idle.pop()  # atomic: no two threads take the same one
            except IndexError:
                break
            if connection.broken or not _still_open(connection):
                connection.close()
                continue
            return connection
        try:
            return Http2Connection(self._host, self._port, timeout_s, self._tls)
        except CallFailure as exc:
            raise RpcFailure(exc.status, exc.details) from None

    def close(self) -> None:
        self._closed = True
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break


def _still_open(connection: Http2Connection) -> bool:
    """False for a connection the peer closed or is closing (GOAWAY) while it was idle. One
    used moments ago is taken as it is; any other is looked at (a poll, and a read of what
    came: a ping is no reason to drop it). Without the look, every pooled connection of a
    restarted etcd failed one call, and the library then shunned the member for half a
    second: each process stalled ~0.75 s after an etcd restart (grpcio: ~10 ms)."""
    if time.monotonic() - connection.last_used < _CHECK_IDLE_S:
        return True
    return connection.usable()


class LazyChannel:
    """A gRPC channel made when something first uses it. A lean client may never (only
    authentication and the library's other stubs take gRPC), and a made channel keeps
    grpcio's poller and timer threads waking an idle process about ten times a second."""

    def __init__(self, make: Callable[[], grpc.Channel]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None

    def made(self) -> bool:
        return self._channel is not None

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._channel is None:
                self._channel = self._make()
        return getattr(self._channel, name)

    def release(self) -> None:
        """Closes the channel if it was made; the next use makes another."""
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def close(self) -> None:
        with self._lock:
            channel, self._make = self._channel, _closed
        if channel is not None:
            channel.close()


def _closed() -> grpc.Channel:
    raise ValueError("this etcd client was closed")


class LazyEndpoint(etcd3.Endpoint):  # type: ignore[misc]
    """An etcd member whose gRPC channel is a LazyChannel."""

    def _mkchannel(self, opts: Any) -> LazyChannel:
        return LazyChannel(lambda: etcd3.Endpoint._mkchannel(self, opts))


class LeanKVClient(etcd3.MultiEndpointEtcd3Client):  # type: ignore[misc]
    """The library's multi-endpoint client with its KV stub on the lean path (`LeanKV` for
    the member in use; a fail-over drops it, and the next call opens one on the next)."""

    tls: ssl.SSLContext | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Taken while a stub is made: threads that all found none (a new client, or after a
        # fail-over cleared it) made one each, and all but the last one kept were dropped
        # with their pooled connections open. Reentrant: `channel` may clear the stubs.
        self._stub_lock = threading.RLock()
        self._watches: weakref.WeakSet[LeanWatch] = weakref.WeakSet()
        # Closed, or replaced at a token renewal (close_kv): a request a thread still makes
        # through it gets a stub that keeps no connection (one pooled there was never closed).
        self._retired = False
        super().__init__(*args, **kwargs)

    def open_watch(self, request: Any) -> tuple[LeanWatch, Any]:
        """A watch on the member in use, and that member. close() ends it, as closing grpcio's
        channel ended its streams (a fail-over does not: its owner hears when it breaks)."""
        stub = self.kvstub
        member = self.endpoint_in_use
        watch = stub.open_watch(request, self.metadata)
        with self._stub_lock:
            self._watches.add(watch)
        return watch, member

    @property
    def leasestub(self) -> LeanKV:
        return self.kvstub

    @property
    def kvstub(self) -> LeanKV:
        stub: LeanKV | None = self._stubs.get("kvstub")
        if stub is None:
            with self._stub_lock:
                stub = self._stubs.get("kvstub")
                if stub is None:
                    self.channel  # noqa: B018 - the property moves off a member marked failed
                    endpoint = self.endpoint_in_use
                    host, _, port = endpoint.netloc.rpartition(":")
                    stub = self._stubs["kvstub"] = LeanKV(host.strip("[]"), int(port),
                                                          self.tls)
                    if self._retired:
                        stub.close()
        return stub

    def _clear_old_stubs(self) -> None:
        with self._stub_lock:
            self._drop_kv()
            super()._clear_old_stubs()

    def _drop_kv(self) -> None:
        with self._stub_lock:
            stub = self._stubs.pop("kvstub", None)
        if isinstance(stub, LeanKV):
            stub.close()

    def close_kv(self) -> None:
        """Closes the lean KV stub's connections (a client replaced by one with a new token),
        and those of any stub a thread still at work on it makes."""
        with self._stub_lock:
            self._retired = True
            self._drop_kv()

    def release_grpc(self) -> None:
        """Lets go of the gRPC channels made so far (authentication's: nothing else of a new
        client takes gRPC) and the stubs on them; what needs gRPC later makes its own."""
        with self._stub_lock:
            for name in [n for n, stub in self._stubs.items()
                         if n.endswith("stub") and not isinstance(stub, LeanKV)]:
                del self._stubs[name]
            for endpoint in self.endpoints.values():
                if isinstance(endpoint.channel, LazyChannel):
                    endpoint.channel.release()

    def close(self) -> None:
        with self._stub_lock:
            watches = list(self._watches)
            self._watches.clear()
        for watch in watches:
            watch.cancel()
        self.close_kv()
        self._clear_old_stubs()
        super().close()
