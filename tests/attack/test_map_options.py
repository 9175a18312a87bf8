"""Attack: client.map() with the options a user reaches for first.

`client.map(f, xs, window=1)` (or any window under 128) raised "map() needs 1 <= chunk_size
<= window": the user never set chunk_size, whose default was 128. Now chunk_size defaults to
128 or the window, whichever is smaller. And map() was a generator: bad options (chunk_size=0,
no iterable, a window given as a string) raised only at the first result, far from the call
that was wrong, and a map never iterated never said so; now they raise when map() is called,
in both clients.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import droplet
import droplet.aio
from tests.conftest import Cluster


def test_a_small_window_alone_is_enough(client: droplet.DropletClient, unique: str) -> None:
    incr = client.register(lambda lib, x: x + 1, unique)
    assert list(client.map(incr, range(5), window=1)) == [1, 2, 3, 4, 5]
    assert list(client.map(incr, range(30), window=10)) == list(range(1, 31))


@pytest.mark.parametrize("args, options", [
    ((range(3),), {"chunk_size": 0}),
    ((range(3),), {"chunk_size": 8, "window": 4}),
    ((range(3),), {"window": "8"}),
    ((), {}),
])
def test_bad_options_raise_when_map_is_called(client: droplet.DropletClient, unique: str,
                                              args: tuple[Any, ...],
                                              options: dict[str, Any]) -> None:
    with pytest.raises(droplet.InvalidArgumentError):
        client.map(unique, *args, **options)  # never iterated


def test_the_asyncio_map_takes_the_same_options(module_cluster: Cluster, unique: str) -> None:
    async def main() -> None:
        async with await droplet.aio.connect(settings=module_cluster.settings) as client:
            incr = await client.register(lambda lib, x: x + 1, unique)
            assert [r async for r in client.map(incr, range(5), window=1)] == [1, 2, 3, 4, 5]
            with pytest.raises(droplet.InvalidArgumentError):
                client.map(incr, range(3), chunk_size=0)

    asyncio.run(main())
