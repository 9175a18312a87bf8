"""The asyncio client: the same calls as DropletClient, awaitable, without a thread per call.

Calls (`f(x)`, `client.call`, `call_dag`, `call_later`, `map`) are built on the event loop and
sent by the client's one I/O thread (bridge.py), which also settles their futures. Everything
else (register, DAGs, stored values, cancel) is a short blocking request and runs in asyncio's
default executor, like any blocking library call would.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from droplet.aio.bridge import AioBridge, on_its_loop
from droplet.client.client import DropletClient
from droplet.client.dagcalls import build_dag_call, send_dag_call
from droplet.client.dagspecs import describe
from droplet.client.delays import delayed_call, send_delayed
from droplet.client.function import DropletFunction
from droplet.client.future import checked_timeout
from droplet.client.mapping import map_calls
from droplet.client.tagging import checked_needs
from droplet.errors import CancelledError, DropletTimeoutError
from droplet.priority import checked_priority
from droplet.proto import pb

T = TypeVar("T")


class AsyncFuture:
    """An awaitable outcome: `await future` gives the result or raises the call's error,
    waiting at most result_timeout_s (plus the delay of a delayed call); `await
    future.get(timeout)` chooses the limit. Cancelling the task that awaits only stops the
    wait; `await future.cancel()` cancels the call."""

    def __init__(self, client: AsyncDropletClient, call_id: str,
                 future: asyncio.Future[Any], default_timeout_s: float) -> None:
        self._client = client
        self.call_id = call_id
        self._future = future
        self._timeout_s = default_timeout_s

    def __repr__(self) -> str:
        return f"AsyncFuture({self.call_id!r}, {'done' if self.done() else 'pending'})"

    def __await__(self) -> Any:
        return self.get().__await__()

    async def get(self, timeout: float | None = None) -> Any:
        limit = self._timeout_s if timeout is None else checked_timeout(timeout)
        on_its_loop(self._future.get_loop())
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), limit)
        except TimeoutError:
            raise DropletTimeoutError(f"no result for {self.call_id!r} within {limit:g}s"
                                      ) from None

    def done(self) -> bool:
        return self._future.done()

    async def cancel(self) -> bool:
        """Cancels the call (client.cancel): True when its outcome is CANCELLED."""
        if self._future.done():
            return self.cancelled()
        won = await self._client.cancel(self.call_id)
        if won and not self._future.done():
            self._future.set_exception(CancelledError("the call was cancelled",
                                                      code=pb.CANCELLED))
            # The caller knows (True is returned): a future cancelled and never awaited
            # again must not print "Future exception was never retrieved" at exit.
            self._future.exception()
        return won

    def cancelled(self) -> bool:
        if not self._future.done() or self._future.cancelled():
            return False
        return getattr(self._future.exception(), "code", 0) == pb.CANCELLED


class AsyncFunction:
    """A registered function: `await f(x)`, `f.with_priority(9)(x)`, `f.call_later(5, x)`."""

    def __init__(self, client: AsyncDropletClient, handle: DropletFunction) -> None:
        self._client = client
        self.handle = handle
        self.name = handle.name
        self.priority = handle.priority

    def __repr__(self) -> str:
        return f"AsyncFunction({self.name!r})"

    def __call__(self, *args: Any) -> AsyncFuture:
        return self._client.submit(self.name, args, direct=self.handle.direct_response,
                                   priority=self.priority, resources=self.handle.resources,
                                   batching=self.handle.batching)

    def direct(self, *args: Any) -> AsyncFuture:
        return self._client.submit(self.name, args, direct=True, priority=self.priority,
                                   resources=self.handle.resources,
                                   batching=self.handle.batching)

    def with_resources(self, resources: Mapping[str, float]) -> AsyncFunction:
        return AsyncFunction(self._client, self.handle.with_resources(resources))

    def with_priority(self, priority: int) -> AsyncFunction:
        return AsyncFunction(self._client, self.handle.with_priority(priority))

    def call_later(self, delay_s: float, *args: Any) -> AsyncFuture:
        return self._client.submit_delayed(self.name, args, delay_s=delay_s,
                                           priority=self.priority)

    def call_at(self, when: datetime | float, *args: Any) -> AsyncFuture:
        return self._client.submit_delayed(self.name, args, at=when, priority=self.priority)


class AsyncDropletClient:
    def __init__(self, sync: DropletClient, loop: asyncio.AbstractEventLoop) -> None:
        self.sync = sync
        self.settings = sync.settings
        self._bridge = AioBridge(sync, loop)
        self._pending: list[pb.FunctionCall] = []  # calls made since the I/O thread last sent
        self._pending_lock = threading.Lock()
        # Dropped unclosed, it is collected (its I/O thread holds the bridge, not it) and
        # then closes the bridge and the threaded client, which the I/O thread kept alive
        # with its connections for the life of the process (as DropletClient does itself).
        self._closer = weakref.finalize(self, _close_soon, self._bridge, sync)
        self._closer.atexit = False

    async def __aenter__(self) -> AsyncDropletClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closer.detach()
        self._bridge.close()
        await asyncio.to_thread(self.sync.close)

    async def _blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    # -- calls: built here, sent by the I/O thread ------------------------------------------

    def submit(self, name: str, args: Sequence[Any], *, direct: bool = False,
               priority: int = 0, resources: Mapping[str, float] | None = None,
               batching: bool = False) -> AsyncFuture:
        call = self.sync._function_call(name, args)
        call.direct_response = direct
        call.priority = checked_priority(priority, self.settings.max_priority)
        call.resources.update(checked_needs(resources))
        call.batching = batching
        future = self._expect(call.call_id, stored=not direct)
        with self._pending_lock:
            self._pending.append(call)
            first = len(self._pending) == 1
        if first:  # calls made before the I/O thread gets to it travel together
            self._bridge.submit(self._send_pending)
        return future

    def _send_pending(self) -> None:
        with self._pending_lock:
            calls, self._pending = self._pending, []
        self._sending([c.call_id for c in calls], lambda: self.sync._send_calls(calls))

    def call(self, name: str, *args: Any) -> AsyncFuture:
        return self.submit(name, args)

    def submit_delayed(self, name: str, args: Sequence[Any], *, delay_s: float | None = None,
                       at: datetime | float | None = None, priority: int = 0) -> AsyncFuture:
        call, due = delayed_call(self.sync, name, args, delay_s, at, priority)
        future = self._expect(call.call_id, stored=True, delay_s=due - _now())
        self._send(call.call_id, lambda: send_delayed(self.sync, call))
        return future

    def call_dag(self, name: str, arg_map: Mapping[str, Sequence[Any]],
                 direct_response: bool = False, consistency: int = pb.NORMAL,
                 output_key: str | None = None, client_id: str | None = None,
                 continuation: Any = None, dry_run: bool = False) -> Any:
        """`await client.call_dag(...)` is the DAG's result (the chain's last, with a
        `continuation`); with `dry_run`, the request as a dict, nothing sent (awaiting it
        gives the same dict)."""
        call = build_dag_call(self.sync, name, arg_map, direct_response, consistency,
                              output_key, client_id, continuation)
        if dry_run:
            return _DryRun(describe(call, self.sync.names.calls))
        session = call.client_id
        future = self._expect(call.call_id, stored=not direct_response, on_revision=(
            (lambda revision: self.sync.sessions.saw(session, revision)) if session else None))
        self._send(call.call_id, lambda: send_dag_call(self.sync, call))
        return future

    def map(self, function: AsyncFunction | str, *iterables: Iterable[Any],
            chunk_size: int | None = None, window: int = 8192,
            timeout: float | None = None) -> AsyncIterator[Any]:
        """`async for result in client.map(f, xs)`: in order, at most `window` in flight
        (options as DropletClient.map, checked here)."""
        target = function.handle if isinstance(function, AsyncFunction) else function

        def send(calls: list[pb.FunctionCall]) -> None:
            self._bridge.submit(lambda: self._sending([c.call_id for c in calls],
                                                      lambda: self.sync._send_calls(calls)))

        futures = map_calls(self.sync, target, iterables, chunk_size, window, False,
                            make_future=lambda call: self._expect(call.call_id, stored=True),
                            send=send)

        async def results() -> AsyncIterator[Any]:
            for future in futures:
                yield await future.get(timeout)

        return results()

    def _expect(self, call_id: str, stored: bool, delay_s: float = 0.0,
                on_revision: Callable[[int], None] | None = None) -> AsyncFuture:
        inner = self._bridge.expect(call_id, stored, on_revision)
        limit = self.settings.result_timeout_s + max(0.0, delay_s)
        return AsyncFuture(self, call_id, inner, limit)

    def _send(self, call_id: str, send: Callable[[], None]) -> None:
        self._bridge.submit(lambda: self._sending([call_id], send))

    def _sending(self, call_ids: list[str], send: Callable[[], None]) -> None:
        """On the I/O thread: a send that fails settles its calls with the error."""
        try:
            send()
        except Exception as exc:
            for call_id in call_ids:
                self._bridge.fail(call_id, exc)

    # -- short blocking requests, in the default executor ----------------------------------

    async def register(self, function: Callable[..., Any] | type, name: str,
                       **options: Any) -> AsyncFunction:
        handle = await self._blocking(self.sync.register, function, name, **options)
        return AsyncFunction(self, handle)

    async def cancel(self, call_id: str) -> bool:
        return await self._blocking(self.sync.cancel, call_id)

    async def register_dag(self, name: str, functions: Sequence[Any],
                           connections: Iterable[tuple[str, str]],
                           **options: Any) -> tuple[bool, int | None]:
        """Options as DropletClient.register_dag (gpu_functions, batching_functions, ...)."""
        return await self._blocking(self.sync.register_dag, name, functions, list(connections),
                                    **options)

    async def delete_dag(self, name: str) -> tuple[bool, int | None]:
        return await self._blocking(self.sync.delete_dag, name)

    async def list(self, prefix: str | None = None) -> list[str]:
        return await self._blocking(self.sync.list, prefix)

    async def get_function(self, name: str) -> AsyncFunction:
        """A handle on a function registered elsewhere (FunctionNotFoundError if none)."""
        return AsyncFunction(self, await self._blocking(self.sync.get_function, name))

    async def put_object(self, key: str, value: Any) -> None:
        await self._blocking(self.sync.put_object, key, value)

    async def get_object(self, key: str) -> Any:
        return await self._blocking(self.sync.get_object, key)


def _now() -> float:
    return time.time()


def _close_soon(bridge: AioBridge, sync: DropletClient) -> None:
    """Closes a collected client's parts on a thread of their own (collection may happen on
    the I/O thread itself, whose end bridge.close() waits for)."""
    def close() -> None:
        bridge.close()
        sync.close()

    threading.Thread(target=close, daemon=True, name="droplet-aio-close").start()


class _DryRun(dict[str, Any]):
    """A dry run's request: usable as it is, and awaitable like every other call_dag."""

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        async def itself() -> dict[str, Any]:
            return self

        return itself().__await__()
