"""The user library: the first argument of every function (`lib`).

It gives a running function the store (`get`, `put`, `put_many`, `delete`), its worker's id
(`getid`, also its address for messages), messages to and from other running functions
(`send`, `recv`), and calls of other functions (`call`). Bad use raises a DropletError inside
the calling function, which the worker turns into that call's EXECUTION_ERROR; it never
reaches the worker itself.

Each run gets a library of its own, bound to a `RunContext` that says how reads and writes
behave: NORMAL reads the newest value this worker knows (its cache, kept current by a watch);
a MULTI DAG call reads one snapshot of the store, remembers what it read, and buffers its
writes until the call ends; a client_id session never reads older than what the session has
already seen. What a run read and wrote comes back in its `RunOutcome`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from droplet.broker_config.names import check_name
from droplet.errors import (
    CompactedError,
    DropletTimeoutError,
    InvalidArgumentError,
    SnapshotExpired,
    error_from_info,
)
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.values import ValueStore
from droplet.worker.cache import ValueCache


@dataclass
class RunContext:
    """What the call being run asks of reads and writes, and what it did."""

    snapshot_revision: int = 0  # MULTI: every read at this revision
    writes: dict[str, pb.Value] | None = None  # MULTI: buffered writes (None: write through)
    deletes: set[str] = field(default_factory=set)  # MULTI: buffered deletes
    reads: dict[str, int] = field(default_factory=dict)  # MULTI: store key -> revision read
    min_revision: int = 0  # session: no read older than this
    observed_revision: int = 0  # newest revision read or written: reported to the session

    @property
    def buffered(self) -> bool:
        return self.writes is not None


@dataclass
class RunOutcome:
    value: pb.Value  # the result, or an ERROR value
    context: RunContext
    retryable: bool = False  # the function's retry policy asks for another attempt


class MessagePort(Protocol):
    """The worker's side of messages and nested calls (over its broker connection)."""

    def send(self, destination: str, message: pb.UserMessage) -> None: ...

    def receive(self, timeout_s: float) -> list[pb.UserMessage]: ...

    def start_call(self, call: pb.FunctionCall) -> None: ...


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"store keys are non-empty strings, not {key!r}")
    return key


class CallHandle:
    """A call started with lib.call(); its result is read from the store."""

    def __init__(self, call_id: str, values: ValueStore) -> None:
        self.key = call_id
        self._values = values

    def get(self, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while (value := self._values.outcome(self.key)) is None:
            if time.monotonic() + pause > deadline:
                raise DropletTimeoutError(f"no result for {self.key!r} within {timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        return _load(value)


class Library:
    """What every run's library shares: the worker's id, store, cache and message port."""

    def __init__(self, worker_id: str, values: ValueStore, cache: ValueCache | None = None,
                 port: MessagePort | None = None) -> None:
        self.worker_id = worker_id
        self.values = values
        self.cache = cache
        self.port = port

    def for_run(self, context: RunContext) -> UserLibrary:
        return UserLibrary(self, context)


class UserLibrary:
    def __init__(self, shared: Library, context: RunContext) -> None:
        self._shared = shared
        self._context = context

    def getid(self) -> str:
        return self._shared.worker_id

    # -- the store -------------------------------------------------------------------------

    def get(self, key: str | Iterable[str]) -> Any:
        """The value under key (None when missing), or a {key: value} dict for several keys."""
        if isinstance(key, str):
            value = self._read([_check_key(key)]).get(key)
            return None if value is None else _load(value)
        keys = [_check_key(k) for k in key]
        found = self._read(keys)
        return {k: _load(found[k]) if k in found else None for k in keys}

    def get_raw(self, key: str) -> bytes | None:
        """The stored bytes of a value (a pickle), without loading them."""
        value = self._read([_check_key(key)]).get(key)
        return None if value is None else value.body

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def put_many(self, values: Mapping[str, Any]) -> None:
        """Writes several keys in one etcd transaction: readers see all or none."""
        dumped = {_check_key(k): serializer.dump(v) for k, v in values.items()}
        context = self._context
        if context.writes is not None:
            context.writes.update(dumped)
            context.deletes.difference_update(dumped)
            return
        revision = self._shared.values.put_values(dumped)
        context.observed_revision = max(context.observed_revision, revision)
        cache = self._shared.cache
        if cache is not None:
            for key, value in dumped.items():
                cache.store(key, value, revision)

    def delete(self, key: str) -> None:
        key = _check_key(key)
        context = self._context
        if context.writes is not None:
            context.writes.pop(key, None)
            context.deletes.add(key)
            return
        revision = self._shared.values.delete(key)
        context.observed_revision = max(context.observed_revision, revision)
        if self._shared.cache is not None:
            self._shared.cache.drop(key)

    def _read(self, keys: list[str]) -> dict[str, pb.Value]:
        context = self._context
        found: dict[str, pb.Value] = {}
        if context.writes is not None:
            for key in keys:
                if key in context.writes:
                    found[key] = context.writes[key]
            keys = [k for k in keys if k not in found and k not in context.deletes]
        if not keys:
            return found
        cache = self._shared.cache
        cache_fresh = cache is not None and cache.fresh_for(context.min_revision)
        if context.snapshot_revision or not cache_fresh:
            seen = context.reads if context.snapshot_revision else None
            try:
                stored = self._shared.values.read(keys, context.snapshot_revision, seen)
            except CompactedError:
                raise SnapshotExpired(f"snapshot {context.snapshot_revision} was compacted") \
                    from None
            for key, item in stored.items():
                found[key] = item.value
                context.observed_revision = max(context.observed_revision, item.mod_revision)
        else:
            assert cache is not None
            for key, (value, revision) in cache.read(keys).items():
                found[key] = value
                context.observed_revision = max(context.observed_revision, revision)
        return found

    # -- messages and calls ----------------------------------------------------------------

    def send(self, destination: str, message: Any) -> None:
        """Sends message to the worker `destination` (an id from its lib.getid()); it waits
        there, in order, until a function on that worker calls lib.recv()."""
        try:
            check_name("worker id", destination)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        body = serializer.dump(message)
        worker_id = self._shared.worker_id
        self._need_port().send(
            destination, pb.UserMessage(sender=worker_id, destination=destination, body=body),
        )

    def recv(self, timeout: float = 0.0) -> list[tuple[str, Any]]:
        """(sender id, message) pairs that arrived for this worker, waiting up to `timeout`
        seconds for the first; an empty list when none came in time."""
        messages = self._need_port().receive(max(0.0, timeout))
        return [(m.sender, serializer.load(m.body)) for m in messages]

    def call(self, name: str, *args: Any) -> CallHandle:
        """Starts another function; `.get(timeout)` on the handle waits for its result.
        (A call waited on from inside a function needs another worker free to run it.)"""
        try:
            check_name("function", name)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        call_id = uuid.uuid4().hex
        call = pb.FunctionCall(name=name, response_key=call_id, call_id=call_id,
                               keep_result=True)
        for arg in args:
            serializer.dump(arg, call.arguments.values.add())
        self._need_port().start_call(call)
        return CallHandle(call_id, self._shared.values)

    def _need_port(self) -> MessagePort:
        if self._shared.port is None:
            raise InvalidArgumentError("messages and calls need a worker's broker connection")
        return self._shared.port


def _load(value: pb.Value) -> Any:
    """A stored value; a stored call error is raised, as the client's get_object does."""
    loaded = serializer.load(value)
    if isinstance(loaded, pb.ErrorInfo):
        raise error_from_info(loaded)
    return loaded
