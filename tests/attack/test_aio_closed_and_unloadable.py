"""Attack: the asyncio client used carelessly.

- A call made after `await client.close()`: its future was created, its sending queued for an
  I/O thread that had ended, and awaiting it timed out (result_timeout_s) with "no result ...
  within 6s". The threaded client says at once that it is closed; so does this one now.
- A result this process cannot load (its class's module is missing here, or its loading
  raises): the I/O thread only logged the exception, the future was never settled, and the
  caller got the same misleading timeout. The threaded client's get() raises the loading
  error; so does `await` now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import droplet
import droplet.aio
from tests.conftest import Cluster


def _refuse_loading() -> None:
    raise ValueError("cannot load on the client")


def test_a_call_after_close_is_refused_at_once(module_cluster: Cluster, unique: str) -> None:
    async def main() -> None:
        settings = module_cluster.settings.with_(result_timeout_s=6)
        client = await droplet.aio.connect(settings=settings)
        incr = await client.register(lambda lib, x: x + 1, unique)
        assert await incr(1) == 2
        await client.close()
        started = time.monotonic()
        with pytest.raises(droplet.DropletError, match="closed") as raised:
            await incr(1)
        assert not isinstance(raised.value, droplet.DropletTimeoutError)
        assert time.monotonic() - started < 1

    asyncio.run(main())


def test_a_result_that_cannot_be_loaded_here_raises_its_error(
        module_cluster: Cluster, unique: str) -> None:
    class Unloadable:
        def __reduce__(self) -> Any:
            return (_refuse_loading, ())

    async def main() -> None:
        settings = module_cluster.settings.with_(result_timeout_s=6)
        async with await droplet.aio.connect(settings=settings) as client:
            bad = await client.register(lambda lib: Unloadable(), unique)
            started = time.monotonic()
            with pytest.raises(ValueError, match="cannot load on the client"):
                await bad()
            assert time.monotonic() - started < 3

    asyncio.run(main())
