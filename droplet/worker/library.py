"""The user library: the first argument of every function (`lib`).

It gives a running function the store (`get`, `put`, `put_many`, `delete`), its worker's id
(`getid`, also its address for messages), messages to and from other running functions
(`send`, `recv`), and calls of other functions (`call`). Bad use raises a DropletError inside
the calling function, which the worker turns into that call's EXECUTION_ERROR; it never
reaches the worker itself.

How reads and writes behave depends on the call being run (see `CallContext`): NORMAL reads
the newest value this worker knows (its cache, kept current by a watch); a MULTI DAG call
reads one snapshot of the store and buffers its writes until the call ends; a client_id
session never reads older than what the session has already seen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from droplet.broker_config.names import check_name
from droplet.errors import DropletTimeoutError, InvalidArgumentError, error_from_info
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.values import ValueStore
from droplet.worker.cache import ValueCache


@dataclass
class CallContext:
    """What the call being run asks of reads and writes."""

    snapshot_revision: int = 0  # MULTI: every read at this revision
    writes: dict[str, pb.Value] | None = None  # MULTI: buffered writes (None: write through)
    deletes: set[str] = field(default_factory=set)  # MULTI: buffered deletes
    min_revision: int = 0  # session: no read older than this
    observed_revision: int = 0  # newest revision read or written: reported to the session

    @property
    def buffered(self) -> bool:
        return self.writes is not None


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

    def __init__(self, key: str, values: ValueStore) -> None:
        self.key = key
        self._values = values

    def get(self, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while (value := self._values.get_value(self.key)) is None:
            if time.monotonic() + pause > deadline:
                raise DropletTimeoutError(f"no result for {self.key!r} within {timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        return _load(value)


class UserLibrary:
    def __init__(
        self,
        worker_id: str,
        values: ValueStore,
        cache: ValueCache | None = None,
        port: MessagePort | None = None,
    ) -> None:
        self._worker_id = worker_id
        self._values = values
        self._cache = cache
        self._port = port
        self.context = CallContext()

    def begin(self, context: CallContext) -> None:
        """Set by the worker before each run."""
        self.context = context

    def getid(self) -> str:
        return self._worker_id

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
        context = self.context
        if context.writes is not None:
            context.writes.update(dumped)
            context.deletes.difference_update(dumped)
            return
        revision = self._values.put_values(dumped)
        context.observed_revision = max(context.observed_revision, revision)
        if self._cache is not None:
            for key, value in dumped.items():
                self._cache.store(key, value, revision)

    def delete(self, key: str) -> None:
        key = _check_key(key)
        if self.context.writes is not None:
            self.context.writes.pop(key, None)
            self.context.deletes.add(key)
            return
        self._values.delete(key)
        if self._cache is not None:
            self._cache.drop(key)

    def stored_result(self, key: str) -> pb.Value | None:
        """A call's stored outcome, read past the cache (results are not cached)."""
        return self._values.get_value(key)

    def _read(self, keys: list[str]) -> dict[str, pb.Value]:
        context = self.context
        found: dict[str, pb.Value] = {}
        if context.buffered:
            assert context.writes is not None
            for key in keys:
                if key in context.writes:
                    found[key] = context.writes[key]
            keys = [k for k in keys if k not in found and k not in context.deletes]
        if not keys:
            return found
        cache_fresh = self._cache is not None and self._cache.revision >= context.min_revision
        if context.snapshot_revision or not cache_fresh:
            stored = self._values.read(keys, context.snapshot_revision)
            for key, item in stored.items():
                found[key] = item.value
                context.observed_revision = max(context.observed_revision, item.mod_revision)
        else:
            assert self._cache is not None
            for key, (value, revision) in self._cache.read(keys).items():
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
        self._need_port().send(
            destination,
            pb.UserMessage(sender=self._worker_id, destination=destination, body=body),
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
        call = pb.FunctionCall(name=name, response_key=call_id, call_id=call_id)
        for arg in args:
            serializer.dump(arg, call.arguments.values.add())
        self._need_port().start_call(call)
        return CallHandle(call_id, self._values)

    def _need_port(self) -> MessagePort:
        if self._port is None:
            raise InvalidArgumentError("messages and calls need a worker's broker connection")
        return self._port


def _load(value: pb.Value) -> Any:
    """A stored value; a stored call error is raised, as the client's get_object does."""
    loaded = serializer.load(value)
    if isinstance(loaded, pb.ErrorInfo):
        raise error_from_info(loaded)
    return loaded
