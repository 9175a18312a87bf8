"""client.map: a stream of calls with a bounded window, shared by the threaded and the asyncio
clients (each waits on the futures this yields in its own way)."""

from __future__ import annotations

import itertools
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from droplet.client.function import DropletFunction
from droplet.client.future import DropletFuture
from droplet.errors import InvalidArgumentError
from droplet.proto import pb

if TYPE_CHECKING:
    from droplet.client.client import DropletClient

F = TypeVar("F")

DEFAULT_CHUNK_SIZE = 128


class _ProgressBar:
    """A one-line count of finished calls on stderr for map(progress=True)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self._last > 0.2:
            self._last = now
            print(f"\rdroplet map: {done} calls done", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


def map_calls(
    client: DropletClient,
    function: DropletFunction | str,
    iterables: tuple[Iterable[Any], ...],
    chunk_size: int | None,
    window: int,
    progress: bool,
    make_future: Callable[[pb.FunctionCall], F] | None = None,
    send: Callable[[list[pb.FunctionCall]], None] | None = None,
) -> Iterator[F]:
    """The futures of the calls in order, each yielded when it is time to wait for it: the
    caller waits for it before asking for the next, which keeps at most `window` calls in
    flight (sent `chunk_size` to a message; None: DEFAULT_CHUNK_SIZE, or the window when
    smaller, so that `map(f, xs, window=1)` works as asked). The options are checked now,
    when map() is called, not at its first result."""
    name = function.name if isinstance(function, DropletFunction) else function
    if not isinstance(name, str):
        raise InvalidArgumentError("map() takes a registered DropletFunction or its name")
    for label, number in (("window", window), ("chunk_size", chunk_size)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            raise InvalidArgumentError(f"map() takes a whole number {label}, not {number!r}")
    chunk = min(DEFAULT_CHUNK_SIZE, window) if chunk_size is None else chunk_size
    if chunk < 1 or window < chunk:
        raise InvalidArgumentError(f"map() needs 1 <= chunk_size <= window, not chunk_size "
                                   f"{chunk} and window {window}")
    if not iterables:
        raise InvalidArgumentError("map() needs at least one iterable")
    return _stream(client, function, name, iterables, chunk, window, progress, make_future,
                   send)


def _stream(
    client: DropletClient,
    function: DropletFunction | str,
    name: str,
    iterables: tuple[Iterable[Any], ...],
    chunk_size: int,
    window: int,
    progress: bool,
    make_future: Callable[[pb.FunctionCall], F] | None,
    send: Callable[[list[pb.FunctionCall]], None] | None,
) -> Iterator[F]:
    priority = function.priority if isinstance(function, DropletFunction) else 0
    handle = function if isinstance(function, DropletFunction) else None

    def stored_future(call: pb.FunctionCall) -> Any:
        future = DropletFuture(call.response_key, client)
        weakref.finalize(future, client.pump.forget, call.response_key)
        return future

    make = make_future or stored_future
    bar = _ProgressBar(progress)
    pending: deque[F] = deque()
    items = zip(*iterables, strict=False)
    done = 0
    while True:
        chunk = list(itertools.islice(items, chunk_size))
        if chunk:
            calls = [client._function_call(name, args) for args in chunk]
            for call in calls:
                call.priority = priority
                if handle is not None:  # tags and batching travel with every call
                    call.resources.update(handle.resources)
                    call.batching = handle.batching
                pending.append(make(call))
            (send or client._send_calls)(calls)
        while pending and (not chunk or len(pending) > window - chunk_size):
            yield pending.popleft()
            done += 1
            bar.update(done)
        if not chunk and not pending:
            bar.close()
            return
