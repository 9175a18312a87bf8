"""The etcd3 client behind `EtcdKV`: endpoints, retries across an etcd restart, fail-over.

Split from the KV operations (store/etcd.py) because reaching a member is one concern and
what is asked of it another: every request goes through `EtcdClient.call`, so a leader
election, a restarted member or an expired auth token is handled in one place, and every
gRPC or client failure leaves as a `StoreError`. A failed endpoint is retried after half a
second (the library's default would shun it for five minutes, so one etcd restart would take
a single-endpoint process down for that long).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3.client import EtcdTokenCallCredentials

from droplet.errors import (
    CompactedError,
    DropletError,
    StoreCredentialsError,
    StoreError,
    StoreRequestTooLargeError,
    StoreTlsError,
)
from droplet.settings import Settings
from droplet.store.etcd_lean import LazyEndpoint, LeanKVClient
from droplet.tls import check_etcd_files, etcd_refusal, etcd_uses_tls

REQUEST_TIMEOUT_S = 5.0
_ENDPOINT_RETRY_S = 0.5
# Keepalive pings while a stream is open: a watch has no deadline, so on a member that holds
# the connection but answers nothing (a hung VM, a one-way partition, SIGSTOP) it would wait
# forever; the pings fail it within ~10 s and its owner watches again on another member.
# etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time) with a GOAWAY.
_GRPC_OPTIONS = {
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.keepalive_time_ms": 6000,
    "grpc.keepalive_timeout_ms": 4000,
    "grpc.http2.ping_timeout_ms": 4000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
}


class EtcdClient:
    """One MultiEndpointEtcd3Client over etcd_endpoints, reconnected when its token expires."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.client: Any = None
        self._answered = False  # a request succeeded: the TLS settings are not the problem
        self.client = self._connect()

    @property
    def endpoints(self) -> int:
        return len(self._settings.etcd_endpoints)

    def _connect(self) -> Any:
        s = self._settings
        creds = tls = None
        secure = etcd_uses_tls(s)
        if secure:
            creds, tls = _read_credentials(s)
        endpoints = []
        lean = s.etcd_transport == "lean"
        endpoint_kind = LazyEndpoint if lean else etcd3.Endpoint
        for spec in s.etcd_endpoints:
            host, _, port = spec.rpartition(":")
            if not host or not port.isdigit():
                raise StoreError(f"bad etcd endpoint {spec!r}: expected host:port")
            endpoints.append(
                endpoint_kind(
                    host, int(port), secure=secure, creds=creds,
                    time_retry=_ENDPOINT_RETRY_S, opts=list(_GRPC_OPTIONS.items()),
                )
            )
        kind = LeanKVClient if lean else etcd3.MultiEndpointEtcd3Client
        try:
            client = kind(endpoints=endpoints, timeout=REQUEST_TIMEOUT_S, failover=True)
        except Exception as exc:
            raise (etcd_refusal(s, detail(exc), probe=True) or fail("connect", exc)) from None
        if lean:
            client.tls = tls
        if s.etcd_user is not None or s.etcd_password is not None:
            self._authenticate(client, secure)
            if lean:  # no one else has the client yet: no call of another thread on it
                client.release_grpc()
        return client

    def _authenticate(self, client: Any, secure: bool) -> None:
        """What the library's constructor would do with user and password, but moving to
        another member like any request: it asked one member picked at random, once, so with
        a member down (or during an election) a start or a token renewal failed one time in
        three. The token goes as metadata, and as call credentials only over TLS: gRPC
        refuses call credentials on a plaintext channel, so auth never worked without TLS."""
        s = self._settings
        if not (s.etcd_user and s.etcd_password):
            raise StoreCredentialsError("set both etcd_user and etcd_password "
                                        "(DROPLET_ETCD_USER, DROPLET_ETCD_PASSWORD), or neither")
        request = etcdrpc.AuthenticateRequest(name=s.etcd_user, password=s.etcd_password)
        deadline = time.monotonic() + s.store_retry_s
        delay = 0.05
        probe = True
        while True:
            try:
                token = client.authstub.Authenticate(request, client.timeout).token
                break
            except Exception as exc:
                if refused := etcd_refusal(s, detail(exc), probe=probe):
                    raise refused from None
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise fail("connect", exc) from None
                probe = False
                fail_over(client, self.endpoints)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        client.metadata = (("token", token),)
        if secure:
            client.call_credentials = grpc.metadata_call_credentials(
                EtcdTokenCallCredentials(token))

    def _never_answered(self, error: DropletError, exc: BaseException) -> DropletError:
        """An etcd that never answered this client and still cannot be reached is most often
        a wrong address or an etcd not started: say where it was looked for, and the
        setting ("etcd get prefix failed: UNAVAILABLE: failed to connect to ..." alone)."""
        if self._answered or not transient(exc) or type(error) is not StoreError:
            return error
        where = ", ".join(self._settings.etcd_endpoints)
        return StoreError(f"{error}: is etcd running at {where}? check etcd_endpoints "
                          "(DROPLET_ETCD)")

    def call(self, action: str, fn: Callable[[Any], Any]) -> Any:
        """Runs fn(client), converting failures. While etcd is unreachable (a restart, a
        leader election) it retries with back-off for up to `store_retry_s`; an expired auth
        token gets a reconnect."""
        deadline = time.monotonic() + self._settings.store_retry_s
        delay = 0.05
        probed = False
        while True:
            client = self.client
            try:
                result = fn(client)
                self._answered = True
                return result
            except Exception as exc:
                if self._settings.etcd_user and "token" in str(exc).lower():
                    self._reconnect(client)
                # Probing the endpoints for TLS costs seconds: not for a member that died
                # (or an election) once etcd has answered this client over its plaintext.
                elif refused := etcd_refusal(self._settings, detail(exc),
                                             probe=not probed and not self._answered):
                    raise refused from None
                elif not transient(exc) or time.monotonic() + delay > deadline:
                    raise self._never_answered(fail(action, exc), exc) from None
                probed = True
                if isinstance(exc, grpc.RpcError):
                    self.fail_over()
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _reconnect(self, failed: Any) -> None:
        """A new client (a new token) in place of `failed`, unless another thread that saw
        the token expire too replaced it already. The old client's lean connections are
        closed (its gRPC channels are left as they were: a call of another thread may still
        be on them, and closing a channel cancels its calls; a lean call in progress keeps its
        connection and closes it when done)."""
        with self._lock:
            if self.client is not failed:
                return
            self.client = self._connect()
        if isinstance(failed, LeanKVClient):
            failed.close_kv()

    def fail_over(self) -> None:
        """Takes the member in use for failed (for _ENDPOINT_RETRY_S), so the next request
        goes to another one. The library does this itself for the calls it makes; our own
        stubs (transactions) and watch streams do it here."""
        fail_over(self.client, self.endpoints)

    @property
    def endpoint_in_use(self) -> str:
        """host:port of the member requests go to now."""
        return str(self.client.endpoint_in_use.netloc)

    def close(self) -> None:
        self.client.close()


def fail_over(client: Any, endpoints: int, member: Any = None) -> None:
    """Marks the client's member in use failed (see EtcdClient.fail_over) and moves to another
    one now: the mark lasts only _ENDPOINT_RETRY_S, and the library moves only when a channel
    is asked for while it lasts, so a watch started later went back to the same member (a
    hung one again). With one endpoint there is nowhere else to go, and the library would
    refuse it for a while.

    `member` is the endpoint that failed when the caller knows it (a watch's, opened a while
    ago): when the client has moved off it since (a request timed out there sooner), only it
    is marked. Marking the member in use instead took a healthy one for failed, and the
    library then went back to the first member not marked, often the hung one again (a mirror
    on a SIGSTOPped member took ~25 s to see writes again, not ~10)."""
    if endpoints > 1:
        with contextlib.suppress(Exception):
            if member is not None and member is not client.endpoint_in_use:
                member.fail()
                return
            client.endpoint_in_use.fail()
            client._clear_old_stubs()
            client.channel  # noqa: B018 - the property picks a member not marked failed


def detail(exc: BaseException) -> str:
    # The library raises its own exception (ConnectionFailedError, empty) inside the handler
    # of the gRPC error: gRPC's words (a TLS refusal, say) are in its context.
    if not isinstance(exc, grpc.RpcError) and isinstance(exc.__context__, grpc.RpcError):
        exc = exc.__context__
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def fail(action: str, exc: BaseException) -> DropletError:
    """The StoreError a failed request leaves as (a CompactedError for a compacted revision),
    or a StoreRequestTooLargeError for a request etcd will never take."""
    text = detail(exc)
    if isinstance(exc, grpc.RpcError) and "compacted" in str(exc.details()):
        return CompactedError(f"etcd {action} failed: {text}")
    if isinstance(exc, grpc.RpcError) and any(words in str(exc.details())
                                              for words in _TOO_LARGE):
        return StoreRequestTooLargeError(f"etcd refused the {action} as too large: {text}")
    return StoreError(f"etcd {action} failed: {text}")


# gRPC's refusal of a message over the server's limit (RESOURCE_EXHAUSTED), and etcd's own of
# a request over --max-request-bytes (ErrRequestTooLarge).
_TOO_LARGE = ("larger than max", "request is too large")


def transient(exc: BaseException) -> bool:
    """Failures that mean "etcd is not reachable right now", as opposed to a refusal. Among
    them what a member answers for a request it did not apply: during a leader election, its
    proposal dropped or no leader to propose to; while the member stops, its raft node refusing
    the proposal ("raft: stopped", raft.ErrStopped: never in the log). etcd sends all three as
    UNKNOWN."""
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    if isinstance(exc, grpc.RpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
            or any(words in (exc.details() or "") for words in _NOT_APPLIED)
    return isinstance(exc, ValueError) and "failed node" in str(exc)


_NOT_APPLIED = ("raft proposal dropped", "etcdserver: no leader", "raft: stopped")


_TRANSIENT_ERRORS = (
    etcd3.exceptions.ConnectionFailedError,
    etcd3.exceptions.ConnectionTimeoutError,
    etcd3.exceptions.NoServerAvailableError,
)


def _read_credentials(settings: Settings) -> tuple[Any, ssl.SSLContext]:
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
    credentials = grpc.ssl_channel_credentials(
        read("etcd_ca_file"), read("etcd_key_file"), read("etcd_cert_file"))
    return credentials, check_etcd_files(settings)
