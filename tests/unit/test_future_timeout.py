"""get(timeout=...) on a future, threaded and asyncio: anything but a number of seconds (or
None) is refused before waiting. No services: the client is a stand-in never reached."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from droplet.aio.client import AsyncFuture
from droplet.client.future import DropletFuture, checked_timeout
from droplet.errors import InvalidArgumentError


class _Unreachable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the client was reached ({name}) before the timeout was checked")


@pytest.mark.parametrize("bad", ["5", float("nan"), True, None.__class__, [1]])
def test_a_timeout_that_is_no_number_is_refused_before_waiting(bad: Any) -> None:
    # "5" was TypeError: unsupported operand type(s) for +: 'float' and 'str'; NaN waited
    # with no limit at all.
    future = DropletFuture("r", _Unreachable())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="takes a number of seconds"):
        future.get(timeout=bad)


def test_numbers_pass_and_a_negative_one_means_no_wait() -> None:
    assert checked_timeout(5) == 5.0 and checked_timeout(0.5) == 0.5
    assert checked_timeout(-1) == -1.0


def test_the_asyncio_future_refuses_the_same() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        future = AsyncFuture.__new__(AsyncFuture)
        future._future = loop.create_future()
        future._timeout_s = 1.0
        future.call_id = "c"
        with pytest.raises(InvalidArgumentError, match="takes a number of seconds"):
            await future.get(timeout="5")  # type: ignore[arg-type]

    asyncio.run(main())


def test_an_asyncio_future_cancelled_and_dropped_logs_nothing() -> None:
    # `f = incr.call_later(5, 1); await f.cancel()`, as the README shows it, printed
    # "Future exception was never retrieved ... CancelledError" when the loop ended.
    import gc

    from droplet.errors import CancelledError

    class Client:
        async def cancel(self, call_id: str) -> bool:
            return True

    logged: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: logged.append(context))
        future = AsyncFuture(Client(), "c", loop.create_future(), 1.0)  # type: ignore[arg-type]
        assert await future.cancel() is True and future.cancelled()
        with pytest.raises(CancelledError):  # awaiting it still raises
            await future
        dropped = AsyncFuture(Client(), "d", loop.create_future(), 1.0)  # type: ignore[arg-type]
        assert await dropped.cancel() is True
        del dropped
        gc.collect()

    asyncio.run(main())
    assert logged == []


def test_calls_left_unanswered_by_close_are_not_reported_at_exit() -> None:
    # Ctrl-C while awaiting a call (the task cancelled, `async with` closing the client)
    # printed "Future exception was never retrieved ... the client was closed before this
    # call was answered". A call still awaited gets that error all the same.
    import gc

    from droplet.aio.client import AsyncDropletClient
    from droplet.client.client import DropletClient
    from droplet.errors import DropletError

    from .inprocess import Fleet

    fleet = Fleet()  # no worker: calls stay unanswered
    fleet.register("f", lambda lib: 1)
    logged: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: logged.append(context))
        client = AsyncDropletClient(
            DropletClient(fleet.settings, fleet.kv, fleet.broker.connect), loop)
        awaited, dropped = client.submit("f", []), client.submit("f", [])
        await client.close()
        with pytest.raises(DropletError, match="closed before this call was answered"):
            await awaited.get(5)
        del dropped
        gc.collect()

    asyncio.run(main())
    gc.collect()
    assert logged == []
