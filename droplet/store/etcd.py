"""etcd behind the `KV` interface: the only module that imports etcd3 (python3-etcd3).

Every gRPC or client failure leaves this module as a `StoreError`; a failed endpoint is
retried after half a second (the library's default would shun it for five minutes, so one etcd
restart would take a single-endpoint process down for that long).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3 import transactions as tx
from etcd3 import utils as etcd_utils
from etcd3.etcdrpc import kv_pb2

from droplet.errors import CompactedError, StoreError, StoreTlsError
from droplet.settings import Settings
from droplet.store.kv import (
    Compare,
    Delete,
    Entry,
    ErrorCallback,
    ModRevisionBelow,
    ModRevisionIs,
    Op,
    Put,
    ValueIs,
    VersionIs,
    WatchCallback,
    WatchEvent,
)
from droplet.tls import etcd_refusal, etcd_uses_tls

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT_S = 5.0
_ENDPOINT_RETRY_S = 0.5
_GRPC_OPTIONS = {
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
}


def _detail(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _fail(action: str, exc: BaseException) -> StoreError:
    detail = _detail(exc)
    if isinstance(exc, grpc.RpcError) and "compacted" in str(exc.details()):
        return CompactedError(f"etcd {action} failed: {detail}")
    return StoreError(f"etcd {action} failed: {detail}")


class EtcdLease:
    def __init__(self, kv: EtcdKV, lease: Any) -> None:
        self._kv = kv
        self._lease = lease

    @property
    def id(self) -> int:
        return int(self._lease.id)

    def refresh(self) -> None:
        responses = self._kv.call("lease refresh", lambda c: list(c.refresh_lease(self.id)))
        if not responses or responses[0].TTL <= 0:
            raise StoreError(f"lease {self.id} expired")

    def revoke(self) -> None:
        self._kv.call("lease revoke", lambda c: c.revoke_lease(self.id))


class EtcdKV:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._client: Any = None
        self._client = self._connect()

    def _connect(self) -> Any:
        s = self._settings
        creds = None
        secure = etcd_uses_tls(s)
        if secure:
            creds = _read_credentials(s)
        endpoints = []
        for spec in s.etcd_endpoints:
            host, _, port = spec.rpartition(":")
            if not host or not port.isdigit():
                raise StoreError(f"bad etcd endpoint {spec!r}: expected host:port")
            endpoints.append(
                etcd3.Endpoint(
                    host, int(port), secure=secure, creds=creds,
                    time_retry=_ENDPOINT_RETRY_S, opts=list(_GRPC_OPTIONS.items()),
                )
            )
        try:
            return etcd3.MultiEndpointEtcd3Client(
                endpoints=endpoints, timeout=_REQUEST_TIMEOUT_S,
                user=s.etcd_user, password=s.etcd_password, failover=True,
            )
        except Exception as exc:
            raise (etcd_refusal(s, _detail(exc), probe=True) or _fail("connect", exc)) from None

    def call(self, action: str, fn: Callable[[Any], Any]) -> Any:
        """Runs fn(client), converting failures. While etcd is unreachable (a restart, a
        leader election) it retries with back-off for up to `store_retry_s`; an expired auth
        token gets a reconnect."""
        deadline = time.monotonic() + self._settings.store_retry_s
        delay = 0.05
        probed = False
        while True:
            try:
                return fn(self._client)
            except Exception as exc:
                if self._settings.etcd_user and "token" in str(exc).lower():
                    with self._lock:
                        self._client = self._connect()
                elif refused := etcd_refusal(self._settings, _detail(exc), probe=not probed):
                    raise refused from None
                elif not _transient(exc) or time.monotonic() + delay > deadline:
                    raise _fail(action, exc) from None
                probed = True
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def get(self, key: str) -> bytes | None:
        value, _ = self.call("get", lambda c: c.get(key))
        return value  # type: ignore[no-any-return]

    def get_entries(self, keys: Sequence[str], revision: int = 0) -> dict[str, Entry]:
        if revision:
            found: dict[str, Entry] = {}
            for key in keys:
                resp = self.call("get", partial(_get_at, key=key, revision=revision))
                for kv in resp.kvs:
                    found[key] = _entry(kv)
            return found
        if len(keys) == 1:
            resp = self.call("get", lambda c: c.get_response(keys[0]))
            return {keys[0]: _entry(resp.kvs[0])} if resp.kvs else {}
        _ok, responses = self.call(
            "get",
            lambda c: c.transaction(compare=[], success=[tx.Get(k) for k in keys], failure=[]),
        )
        out: dict[str, Entry] = {}
        for key, rows in zip(keys, responses, strict=True):
            for value, meta in rows:
                out[key] = Entry(value, meta.mod_revision, meta.create_revision, meta.version)
        return out

    def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        resp = self.call("get prefix", lambda c: c.get_prefix_response(prefix))
        entries = {kv.key.decode(): kv.value for kv in resp.kvs}
        return entries, int(resp.header.revision)

    def count_prefix(self, prefix: str) -> int:
        resp = self.call("count", lambda c: c.get_prefix_response(prefix, count_only=True))
        return int(resp.count)

    def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        resp = self.call("put", lambda c: c.put(key, value, lease=lease))
        return int(resp.header.revision)

    def delete(self, key: str, prefix: bool = False) -> int:
        if prefix:
            resp = self.call("delete", lambda c: c.delete_prefix(key))
        else:
            resp = self.call("delete", lambda c: c.delete(key, return_response=True))
        return int(resp.deleted)

    def txn(
        self, compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op] = ()
    ) -> tuple[bool, int]:
        ok, revision, _ = self._txn(compares, success, failure, previous=False)
        return ok, revision

    def txn_previous(
        self, compares: Iterable[Compare], success: Iterable[Op]
    ) -> tuple[bool, int, dict[str, bytes]]:
        return self._txn(compares, success, (), previous=True)

    def _txn(
        self, compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op],
        previous: bool,
    ) -> tuple[bool, int, dict[str, bytes]]:
        cmp = [_compare(c) for c in compares]
        ok_ops = [_op(o, previous) for o in success]
        fail_ops = [_op(o, False) for o in failure]

        def run(c: Any) -> tuple[bool, int, dict[str, bytes]]:
            request = etcd3.etcdrpc.TxnRequest(
                compare=[x.build_message() for x in cmp],
                success=c._ops_to_requests(ok_ops),
                failure=c._ops_to_requests(fail_ops),
            )
            resp = c.kvstub.Txn(
                request, c.timeout, credentials=c.call_credentials, metadata=c.metadata
            )
            old: dict[str, bytes] = {}
            if previous and resp.succeeded:
                for item in resp.responses:
                    kind = item.WhichOneof("response")
                    if kind == "response_put" and item.response_put.HasField("prev_kv"):
                        kv = item.response_put.prev_kv
                        old[kv.key.decode()] = kv.value
                    elif kind == "response_delete_range":
                        for kv in item.response_delete_range.prev_kvs:
                            old[kv.key.decode()] = kv.value
            return bool(resp.succeeded), int(resp.header.revision), old

        return self.call("transaction", run)  # type: ignore[no-any-return]

    def revision(self) -> int:
        resp = self.call("revision", lambda c: c.get_response("\0", count_only=True))
        return int(resp.header.revision)

    def grant_lease(self, ttl_s: int) -> EtcdLease:
        return EtcdLease(self, self.call("lease grant", lambda c: c.lease(ttl_s)))

    def watch_prefix(
        self,
        prefix: str,
        on_events: WatchCallback,
        on_error: ErrorCallback,
        start_revision: int = 0,
    ) -> Callable[[], None]:
        watch = _PrefixWatch(self._client, prefix, start_revision, on_events, on_error)
        watch.start()
        return watch.cancel

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            log.debug("etcd client close failed", exc_info=True)


class _PrefixWatch(threading.Thread):
    """One gRPC watch stream on a prefix. (The library's own watcher swallows stream errors,
    so a watch would die silently across an etcd restart; this one reports them.)"""

    def __init__(
        self,
        client: Any,
        prefix: str,
        start_revision: int,
        on_events: WatchCallback,
        on_error: ErrorCallback,
    ) -> None:
        super().__init__(daemon=True, name=f"etcd-watch {prefix}")
        self._client = client
        self._on_events = on_events
        self._on_error = on_error
        self._requests: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        self._stream: Any = None
        key = prefix.encode()
        create = etcdrpc.WatchCreateRequest(
            key=key, range_end=etcd_utils.prefix_range_end(key), prev_kv=True,
            start_revision=start_revision,
        )
        self._requests.put(etcdrpc.WatchRequest(create_request=create))

    def _request_stream(self) -> Iterator[Any]:
        while (request := self._requests.get()) is not None:
            yield request

    def run(self) -> None:
        try:
            client = self._client
            stub = etcdrpc.WatchStub(client.channel)
            self._stream = stub.Watch(
                self._request_stream(), credentials=client.call_credentials,
                metadata=client.metadata,
            )
            for response in self._stream:
                if response.compact_revision:
                    raise StoreError(f"watch start compacted ({response.compact_revision})")
                if response.canceled:
                    raise StoreError(f"watch canceled by etcd: {response.cancel_reason}")
                events = [_event(e) for e in response.events]
                if events:
                    self._on_events(events)
            raise StoreError("watch stream ended")
        except Exception as exc:
            if not self._cancelled.is_set():
                self._on_error(exc if isinstance(exc, StoreError) else _fail("watch", exc))

    def cancel(self) -> None:
        self._cancelled.set()
        self._requests.put(None)
        if self._stream is not None:
            self._stream.cancel()


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


def _entry(kv: Any) -> Entry:
    return Entry(kv.value, int(kv.mod_revision), int(kv.create_revision), int(kv.version))


def _transient(exc: BaseException) -> bool:
    """Failures that mean "etcd is not reachable right now", as opposed to a refusal."""
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    if isinstance(exc, grpc.RpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, ValueError) and "failed node" in str(exc)


_TRANSIENT_ERRORS = (
    etcd3.exceptions.ConnectionFailedError,
    etcd3.exceptions.ConnectionTimeoutError,
    etcd3.exceptions.NoServerAvailableError,
)


def _get_at(client: Any, key: str, revision: int) -> Any:
    return client.get_response(key, revision=revision)


def _read_credentials(settings: Settings) -> Any:
    def read(setting: str) -> bytes | None:
        path = getattr(settings, setting)
        if not path:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise StoreTlsError(f"cannot read {setting} (DROPLET_{setting.upper()}) "
                                f"{path!r}: {exc}") from None

    if settings.etcd_key_file and not settings.etcd_cert_file:
        raise StoreTlsError("etcd_key_file is set but etcd_cert_file is not: set both (the "
                            "client certificate and its key) or neither")
    return grpc.ssl_channel_credentials(read("etcd_ca_file"), read("etcd_key_file"),
                                        read("etcd_cert_file"))


def _compare(c: Compare) -> Any:
    if isinstance(c, VersionIs):
        return tx.Version(c.key) == c.version
    if isinstance(c, ValueIs):
        return tx.Value(c.key) == c.value
    if isinstance(c, ModRevisionBelow):
        return tx.Mod(c.key) < c.revision
    if isinstance(c, ModRevisionIs):
        return tx.Mod(c.key) == c.revision
    raise TypeError(f"unknown compare {c!r}")


def _op(o: Op, previous: bool) -> Any:
    if isinstance(o, Put):
        return tx.Put(o.key, o.value, lease=o.lease, prev_kv=previous)
    if isinstance(o, Delete):
        end = etcd_utils.prefix_range_end(etcd_utils.to_bytes(o.key)) if o.prefix else None
        return tx.Delete(o.key, range_end=end, prev_kv=previous)
    raise TypeError(f"unknown op {o!r}")
